// GGUF / ggml quantization blocks: type ids, sizes, and a scalar dequantizer per type.
//
// A quantized matrix [rows, cols] is stored row by row, each row cols / block_elems blocks
// of block_bytes bytes (uint8 [rows, cols / block_elems * block_bytes]). Layouts (ggml):
//   Q8_0 (34 B / 32):  fp16 d, int8 q[32];                       x = d * q
//   Q4_0 (18 B / 32):  fp16 d, uint8 qs[16];                     x = d * (nibble - 8)
//   Q4_1 (20 B / 32):  fp16 d, fp16 m, uint8 qs[16];             x = d * nibble + m
//     (low nibbles of qs are elements 0..15, high nibbles 16..31)
//   Q5_0 (22 B / 32):  fp16 d, uint32 qh, uint8 qs[16];           x = d * (nibble | bit << 4) - 16 d
//   Q5_1 (24 B / 32):  fp16 d, fp16 m, uint32 qh, uint8 qs[16];   x = d * (nibble | bit << 4) + m
//     (bit i of qh is the fifth bit of element i)
//   Q4_K (144 B / 256): fp16 d, fp16 dmin, 12 B of 6-bit scales/mins, uint8 qs[128]
//   Q5_K (176 B / 256): fp16 d, fp16 dmin, 12 B of 6-bit scales/mins, uint8 qh[32], uint8 qs[128]
//     (Q4_K's layout plus a fifth bit: sub-block j's element l takes bit j of qh[l])
//   Q6_K (210 B / 256): uint8 ql[128], uint8 qh[64], int8 scales[16], fp16 d
// The dequantizers here are the plain statement of those layouts; the embedding lookup and
// the K-quant linear path use them, and the tests check them against gguf's own.
#pragma once
#include <cstdint>
#include <cstring>

#include "float_types.h"
#include "pio/checks.h"

namespace pio::cpu {

// ggml type ids (gguf.GGMLQuantizationType).
enum class QType : int { Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14 };

struct QTypeInfo {
  const char* name;
  int block_elems;
  int block_bytes;
};

inline QTypeInfo qtype_info(int qtype) {
  switch (QType(qtype)) {
    case QType::Q4_0: return {"Q4_0", 32, 18};
    case QType::Q4_1: return {"Q4_1", 32, 20};
    case QType::Q5_0: return {"Q5_0", 32, 22};
    case QType::Q5_1: return {"Q5_1", 32, 24};
    case QType::Q8_0: return {"Q8_0", 32, 34};
    case QType::Q4_K: return {"Q4_K", 256, 144};
    case QType::Q5_K: return {"Q5_K", 256, 176};
    case QType::Q6_K: return {"Q6_K", 256, 210};
  }
  fail("qtype: unsupported ggml quantization type id ", qtype,
       " (supported: Q4_0=2, Q4_1=3, Q5_0=6, Q5_1=7, Q8_0=8, Q4_K=12, Q5_K=13, Q6_K=14)");
}

inline float fp16_at(const uint8_t* p) {
  Half h;
  std::memcpy(&h.bits, p, 2);
  return to_float(h);
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K block (ggml's get_scale_min_k4).
inline void q4_k_scale_min(const uint8_t* s, int j, int& sc, int& mn) {
  if (j < 4) {
    sc = s[j] & 63;
    mn = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

inline uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// One block of `qtype` at `b` -> block_elems floats at `y`.
inline void dequantize_block(QType qtype, const uint8_t* b, float* y) {
  switch (qtype) {
    case QType::Q8_0: {
      const float d = fp16_at(b);
      const int8_t* q = reinterpret_cast<const int8_t*>(b + 2);
      for (int i = 0; i < 32; ++i) y[i] = d * q[i];
      return;
    }
    case QType::Q4_0: {
      const float d = fp16_at(b);
      for (int i = 0; i < 16; ++i) {
        y[i] = d * ((b[2 + i] & 0xF) - 8);
        y[i + 16] = d * ((b[2 + i] >> 4) - 8);
      }
      return;
    }
    case QType::Q4_1: {
      const float d = fp16_at(b), m = fp16_at(b + 2);
      for (int i = 0; i < 16; ++i) {
        y[i] = d * (b[4 + i] & 0xF) + m;
        y[i + 16] = d * (b[4 + i] >> 4) + m;
      }
      return;
    }
    case QType::Q5_0:
    case QType::Q5_1: {
      const bool q51 = qtype == QType::Q5_1;
      const float d = fp16_at(b), m = q51 ? fp16_at(b + 2) : 0.0f;
      const int off = q51 ? 0 : 16;
      const uint32_t qh = u32_at(b + (q51 ? 4 : 2));
      const uint8_t* qs = b + (q51 ? 8 : 6);
      for (int i = 0; i < 16; ++i) {
        y[i] = d * (int((qs[i] & 0xF) | ((qh >> i) & 1) << 4) - off) + m;
        y[i + 16] = d * (int((qs[i] >> 4) | ((qh >> (i + 16)) & 1) << 4) - off) + m;
      }
      return;
    }
    case QType::Q5_K: {
      const float d = fp16_at(b), dmin = fp16_at(b + 2);
      const uint8_t* scales = b + 4;
      const uint8_t* qh = b + 16;
      const uint8_t* qs = b + 48;
      for (int c = 0; c < 4; ++c) {  // as Q4_K, each element's fifth bit from qh
        int sc0, m0, sc1, m1;
        q4_k_scale_min(scales, 2 * c, sc0, m0);
        q4_k_scale_min(scales, 2 * c + 1, sc1, m1);
        const float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
        for (int i = 0; i < 32; ++i) {
          y[64 * c + i] = d0 * int((qs[32 * c + i] & 0xF) | ((qh[i] >> (2 * c)) & 1) << 4) - mm0;
          y[64 * c + 32 + i] = d1 * int((qs[32 * c + i] >> 4) | ((qh[i] >> (2 * c + 1)) & 1) << 4) - mm1;
        }
      }
      return;
    }
    case QType::Q4_K: {
      const float d = fp16_at(b), dmin = fp16_at(b + 2);
      const uint8_t* scales = b + 4;
      const uint8_t* qs = b + 16;
      for (int c = 0; c < 4; ++c) {  // 32 bytes of qs -> sub-blocks 2c (low nibbles) and 2c+1 (high)
        int sc0, m0, sc1, m1;
        q4_k_scale_min(scales, 2 * c, sc0, m0);
        q4_k_scale_min(scales, 2 * c + 1, sc1, m1);
        const float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
        for (int i = 0; i < 32; ++i) {
          y[64 * c + i] = d0 * (qs[32 * c + i] & 0xF) - mm0;
          y[64 * c + 32 + i] = d1 * (qs[32 * c + i] >> 4) - mm1;
        }
      }
      return;
    }
    case QType::Q6_K: {
      const uint8_t* ql = b;
      const uint8_t* qh = b + 128;
      const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
      const float d = fp16_at(b + 208);
      for (int h = 0; h < 2; ++h) {  // two halves of 128 elements: 64 bytes of ql, 32 of qh
        for (int i = 0; i < 128; ++i) {
          const int l = (i < 64) ? (ql[64 * h + i] & 0xF) : (ql[64 * h + i - 64] >> 4);
          const int hi = (qh[32 * h + (i & 31)] >> (2 * (i / 32))) & 3;
          const int e = 128 * h + i;
          y[e] = d * sc[e / 16] * ((l | (hi << 4)) - 32);
        }
      }
      return;
    }
  }
}

// A row of `cols` elements (cols a multiple of the block size) -> floats.
inline void dequantize_row(QType qtype, const uint8_t* row, float* y, int64_t cols) {
  const QTypeInfo info = qtype_info(int(qtype));
  for (int64_t b = 0; b < cols / info.block_elems; ++b)
    dequantize_block(qtype, row + b * info.block_bytes, y + b * info.block_elems);
}

}  // namespace pio::cpu
