#pragma once
// A std::vector allocator that leaves new elements of trivial types unset, for buffers that are
// written whole right after they are made (images): zeroing a screenshot's intermediate images on
// one thread first took about a third of the time of resizing them on sixteen.
#include <memory>
#include <utility>

namespace lumen {

template <class T>
struct UninitializedAllocator : std::allocator<T> {
    template <class U>
    struct rebind {
        using other = UninitializedAllocator<U>;
    };
    UninitializedAllocator() = default;
    template <class U>
    UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}
    template <class U>
    void construct(U* p) noexcept {
        ::new (static_cast<void*>(p)) U;
    }
    template <class U, class... Args>
    void construct(U* p, Args&&... args) {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
};

}  // namespace lumen
