"""InternVL's tile grid (dynamic_preprocess in its model cards): the columns x rows whose aspect
ratio is closest to the image's, the larger grid winning a tie when the image has the pixels for
it. Plain Python, for the scripts that run without numpy or torch too."""


def internvl_grid(width, height, min_num, max_num, size):
    aspect = width / height
    ratios = sorted({(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                     if min_num <= i * j <= max_num}, key=lambda r: r[0] * r[1])
    best, best_diff = (1, 1), float("inf")
    for r in ratios:
        diff = abs(aspect - r[0] / r[1])
        if diff < best_diff:
            best, best_diff = r, diff
        elif diff == best_diff and width * height > 0.5 * size * size * r[0] * r[1]:
            best = r
    return best
