// Scratch memory of the fused decode step (decoder_plan.cpp).
#pragma once
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

namespace pio::cpu::decoder {

// 64-byte aligned scratch, grown (never shrunk) to the largest step seen.
class Arena {
 public:
  void* reserve(size_t bytes) {
    if (bytes > size_) {
      const size_t size = (bytes + 63) / 64 * 64;
      void* p = std::aligned_alloc(64, size);
      if (!p) throw std::bad_alloc();
      std::memset(p, 0, size);  // fault the pages in now, not inside the first kernels
      data_.reset(p);
      size_ = size;
    }
    return data_.get();
  }

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> data_;
  size_t size_ = 0;
};

}  // namespace pio::cpu::decoder
