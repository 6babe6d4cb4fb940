/*
 * Fused MX (FP4, FP6, FP8 elements), NVFP4, INT4 and per-tensor FP8 fake
 * quantization and quantization statistics for CPUs.
 *
 * Why hand-written: Inductor cannot fuse a per-block reduction (the block
 * amax) with a tensor-wide reduction (the statistics) without recomputing the
 * quantization per output and reducing every 32-element block horizontally,
 * which measured 0.07 of a memory copy. Here each group of 16 blocks is read
 * once: the 16 block maxima come out of one transpose-reduction, the 16 scales
 * are computed in one vector (for the next group while this one is applied),
 * and the statistics stay in vector accumulators. Two-level NVFP4 and
 * per-tensor FP8 need the tensor amax before any scale, so they read x twice;
 * their statistics do the q-independent sums during that first, memory-bound,
 * read, and their round trips walk back from where it ended, still in cache. Large
 * results go straight to DRAM when their pages are present, and fault their
 * pages in ahead of the stores, overlapped with the reads, when they are not
 * (a new large result comes on 2 MiB pages: srdd.formats.native.new_result). E2M1 results can also be
 * written packed, a 4-bit code per element and a scale per block (srdd_pack_e2m1, srdd.formats.packed).
 *
 * The numerics are those of srdd/formats/kernels.py and elements.py in fp32
 * (the same divisions and clamps; the vector E2M1 rounding is a magic-number
 * addition that gives exactly rint's round-half-even results, see round_mag16),
 * so results are bit-identical to the eager PyTorch path; the statistics sum
 * in float64 like stats_vector() (only the order of additions differs). The
 * vector path (AVX-512 or AVX2 + FMA, one code over 16 lanes) handles whole
 * groups of 16 blocks; the scalar path handles the rest and is the whole kernel
 * on other CPUs (or with SRDD_NO_SIMD).
 *
 * Built on first use by srdd/formats/native.py (cc -O3 -march=native -fopenmp
 * -ffp-contract=off, plus the -m flags of its variant); OpenMP resolves to the
 * libgomp PyTorch already loaded.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#include <unistd.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

/* The vector path this build has: 2 AVX-512, 1 AVX2 + FMA, 0 none (SRDD_NO_SIMD, or another CPU). */
#if defined(SRDD_NO_SIMD)
#define SRDD_SIMD 0
#elif defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define SRDD_SIMD 2
#elif defined(__AVX2__) && defined(__FMA__)
#define SRDD_SIMD 1
#else
#define SRDD_SIMD 0
#endif
#if SRDD_SIMD
#include <float.h>
#include <immintrin.h>
#endif

#define SRDD_API __attribute__((visibility("default")))
#define INLINE static inline __attribute__((always_inline))

/* Format codes, kept in sync with native.py: an MX format is 2 * its element + 1 for rceil scales; the two
 * NVFP4 variants (E2M1 elements), INT4 in groups of 32 and 16, and per-tensor FP8 E4M3 follow. */
enum { EL_E2M1, EL_E2M3, EL_E3M2, EL_E4M3, EL_E5M2, N_ELEMENTS };
enum { FMT_NVFP4 = 2 * N_ELEMENTS, FMT_NVFP4_ONE_LEVEL, FMT_INT4_G32, FMT_INT4_G16, FMT_FP8_TENSOR, N_FORMATS };
#define INT4_QMAX 7
#define INT4_DIVISOR 7.5f /* IntFormat.scale_divisor: qmax + 0.5 */
enum { DT_F32 = 0, DT_BF16 = 1 };
/* Order of the statistics vector (srdd/formats/stats.py SUM_FIELDS). */
enum { S_NONZERO, S_DEADZONE, S_SATURATED, S_NONFINITE, S_X2, S_X4, S_ERR2, S_REL, S_AMAX, NSTATS };
#define MAX_THREADS 256
#define GROUP 16 /* blocks per vector group: one scale per lane */
#define FOLD_GROUPS 64 /* groups per chunk of the two-level statistics sums */
#define STREAM_MIN_BYTES (32LL << 20) /* outputs at least this large bypass the cache (larger than most LLCs) */
#define PREFETCH_AHEAD 4096 /* bytes between the group being read and the one being prefetched */
#define FAULT_GROUPS 64 /* groups per chunk whose fresh output pages are faulted in ahead of the stores */

SRDD_API int srdd_simd(void) { return SRDD_SIMD; }

/* ------------------------------------------------------------------ scalar numerics */

INLINE uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
INLINE float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

INLINE float load1(const void *x, int64_t i, int dtype) {
    if (dtype == DT_F32) return ((const float *)x)[i];
    return u2f((uint32_t)((const uint16_t *)x)[i] << 16);
}

/* fp32 -> bf16 round-to-nearest-even, NaN -> 0x7FC0 (c10::BFloat16's conversion). */
INLINE uint16_t bf16_bits(float f) {
    uint32_t u = f2u(f);
    if (f != f) return 0x7FC0;
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* What fake_quantize returns for y, seen as fp32: the value in the caller's dtype. */
INLINE float in_dtype(float y, int dtype) {
    return dtype == DT_F32 ? y : u2f((uint32_t)bf16_bits(y) << 16);
}

INLINE void store1(void *y, int64_t i, float v, int dtype) {
    if (dtype == DT_F32) ((float *)y)[i] = v;
    else ((uint16_t *)y)[i] = bf16_bits(v);
}

/* 2^k for integer k in [-126, 127], from the bits. */
INLINE float pow2f(int k) { return u2f((uint32_t)(k + 127) << 23); }

/* elements.ElementSpec: mbits mantissa bits, smallest normal exponent emin, largest element max = 1.x * 2^emax. */
typedef struct { int mbits, emin, emax; float max; } element;

INLINE int is_mx(int fmt) { return fmt < FMT_NVFP4; }
INLINE int is_nvfp4(int fmt) { return fmt == FMT_NVFP4 || fmt == FMT_NVFP4_ONE_LEVEL; }
INLINE int is_int4(int fmt) { return fmt == FMT_INT4_G32 || fmt == FMT_INT4_G16; }
INLINE int is_rceil(int fmt) { return is_mx(fmt) && (fmt & 1); }
/* Per-tensor FP8 has no blocks: the kernel walks it in 32s (for the statistics' amax), one scale for all. */
INLINE int block_of(int fmt) { return is_nvfp4(fmt) || fmt == FMT_INT4_G16 ? 16 : 32; }
/* The reference divides x by INT4 and per-tensor scales (v = x / s) and multiplies by the reciprocal of MX
 * and NVFP4 ones; the kernel does the same, so `mul` holds the divisor for these formats. */
INLINE int divides(int fmt) { return is_int4(fmt) || fmt == FMT_FP8_TENSOR; }

/* The element of a format; with `fmt` a constant (every specialised loop) the fields are constants too. */
INLINE element element_of(int fmt) {
    switch (is_mx(fmt) ? fmt / 2 : fmt == FMT_FP8_TENSOR ? EL_E4M3 : EL_E2M1) {
    case EL_E2M3: return (element){3, 0, 2, 7.5f};
    case EL_E3M2: return (element){2, -2, 4, 28.0f};
    case EL_E4M3: return (element){3, -6, 8, 448.0f};
    case EL_E5M2: return (element){2, -14, 15, 57344.0f};
    default: return (element){1, 0, 2, 6.0f};
    }
}

/* elements.round_to_element: quantum 2^(max(E, emin) - mbits) for a value of exponent E, round half to
 * even, saturate at max, sign kept (-0 stays -0, NaN stays NaN). */
INLINE float round_element(float v, element el) {
    float a = fabsf(v);
    int e = (int)(f2u(a) >> 23) - 127;
    int k = (e < el.emin ? el.emin : (e > 126 ? 126 : e)) - el.mbits;
    float q = rintf(a * pow2f(-k)) * pow2f(k);
    return copysignf(q > el.max ? el.max : q, v);
}

typedef struct { float mul; float scale; } block_scale; /* v = x * mul (x / mul if divides), y = round(v) * scale */

/* kernels.mx_block_scales: E8M0 scale from the exponent bits of amax. */
INLINE block_scale mx_scale(uint32_t amax_bits, element el, int rceil) {
    float amax = u2f(amax_bits);
    float p2 = u2f(amax_bits & 0x7f800000u);
    float scale = p2 * pow2f(-el.emax);
    if (rceil && amax > p2 * (el.max * pow2f(-el.emax))) scale = scale * 2.0f;
    if (scale < 0x1p-127f) scale = 0x1p-127f;
    block_scale s = {1.0f / scale, scale};
    if (amax_bits >= 0x7f800000u) s.scale = NAN;
    return s;
}

typedef struct { float pts, inv_pts; int pts_bad; } tensor_scale; /* of two-level NVFP4 and per-tensor FP8 */

/* kernels.nvfp4_blocks: E4M3 block scale under the fp32 tensor scale pts. */
INLINE block_scale nv_scale(uint32_t amax_bits, tensor_scale t) {
    float s = (u2f(amax_bits) / 6.0f) / t.pts;
    s = s < 0x1p-6f ? 0x1p-6f : s;
    s = s > 448.0f ? 448.0f : s;
    float p2 = u2f(f2u(s) & 0x7f800000u);
    float s8 = rintf(s * (8.0f / p2)) * (p2 * 0.125f);
    block_scale b = {t.inv_pts / s8, t.pts * s8};
    if (t.pts == 0.0f) b.mul = b.scale = 0.0f;
    if (amax_bits >= 0x7f800000u || t.pts_bad) b.scale = NAN;
    return b;
}

/* kernels.int_blocks: s = amax / 7.5, x divided by s (by 1 where s is 0, keeping zeros and signs). */
INLINE block_scale int4_scale(uint32_t amax_bits) {
    float s = u2f(amax_bits) / INT4_DIVISOR;
    block_scale b = {s == 0.0f ? 1.0f : s, amax_bits >= 0x7f800000u ? NAN : s};
    return b;
}

/* kernels.per_tensor: one scale s = amax / max for the tensor, x divided by it (by 1 where it is 0). */
INLINE block_scale fp8_tensor_scale(tensor_scale t) {
    block_scale b = {t.pts == 0.0f ? 1.0f : t.pts, t.pts_bad ? NAN : t.pts};
    return b;
}

INLINE block_scale scale_for(uint32_t amax_bits, int fmt, tensor_scale t) {
    if (is_nvfp4(fmt)) return nv_scale(amax_bits, t);
    if (is_int4(fmt)) return int4_scale(amax_bits);
    if (fmt == FMT_FP8_TENSOR) return fp8_tensor_scale(t);
    return mx_scale(amax_bits, element_of(fmt), is_rceil(fmt));
}

/* kernels.int_blocks' rounding: half to even, clamped to [-8, 7] (NaN stays NaN). */
INLINE float round_int4(float v) {
    float r = rintf(v);
    return r < -INT4_QMAX - 1 ? -INT4_QMAX - 1 : (r > INT4_QMAX ? INT4_QMAX : r);
}

/* Whether v counts as saturated: its rounding left the INT4 range, or |v| exceeded the largest element. */
INLINE int saturated1(float v, int fmt, element el) {
    if (is_int4(fmt)) {
        float r = rintf(v);
        return r > INT4_QMAX || r < -INT4_QMAX - 1;
    }
    return fabsf(v) > el.max;
}

INLINE uint32_t amax_bits_scalar(const void *x, int64_t start, int64_t n, int dtype) {
    uint32_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = f2u(load1(x, start + i, dtype)) & 0x7fffffffu;
        m = u > m ? u : m; /* NaN bit patterns sort above Inf, so they win like torch.amax's NaN */
    }
    return m;
}

typedef struct { int64_t nonzero, deadzone, saturated, nonfinite; double x2, x4, err2, rel; uint32_t amax; } acc_t;
/* Where a round trip packs its E2M1 values (srdd_pack_e2m1): codes, block scales, and whether a value of a group
 * the vector path does not take as clean (NaN, Inf or an overflowing scale in reach) was met. */
typedef struct { uint8_t *codes; float *scales; int unclean; } packed_t;

INLINE void stats1(acc_t *a, float xv, float y, int dtype, int saturated) {
    float q = in_dtype(y, dtype);
    if (!isfinite(q)) { a->nonfinite++; return; }
    double xd = xv, d = (double)q - xd, x2 = xd * xd;
    if (xv != 0.0f) {
        a->nonzero++;
        a->deadzone += q == 0.0f;
        a->rel += fabs(d) / fabs(xd);
    }
    a->saturated += saturated;
    a->x2 += x2;
    a->x4 += x2 * x2;
    a->err2 += d * d;
    uint32_t u = f2u(xv) & 0x7fffffffu;
    a->amax = u > a->amax ? u : a->amax;
}

/* Blocks [b0, b1) one at a time: the tail of the SIMD path, or all of it without SIMD. */
INLINE void blocks_scalar(const void *x, void *y, acc_t *acc, int64_t b0, int64_t b1, int block, int fmt,
                          int dtype, tensor_scale t) {
    element el = element_of(fmt);
    for (int64_t b = b0; b < b1; b++) {
        int64_t off = b * block;
        block_scale s = scale_for(amax_bits_scalar(x, off, block, dtype), fmt, t);
        for (int i = 0; i < block; i++) {
            float xv = load1(x, off + i, dtype), v = divides(fmt) ? xv / s.mul : xv * s.mul;
            float q = (is_int4(fmt) ? round_int4(v) : round_element(v, el)) * s.scale;
            if (y) store1(y, off + i, q, dtype);
            else stats1(acc, xv, q, dtype, saturated1(v, fmt, el));
        }
    }
}

/* ------------------------------------------------------------------ 16-lane vectors
 * The group code below is written once, over 16 lanes: vf (fp32 values), vi (their u32 bit patterns), vm
 * (lane flags) and vd (the fp32 values widened to f64). AVX-512 holds 16 fp32 lanes in one register and
 * the flags in a __mmask16; AVX2 holds them in two registers and the flags as all-ones lanes; vd takes twice
 * the registers of vf. Only this section, transpose_max16 and the AVX512-BF16 conversions know which. */
#if SRDD_SIMD

#if SRDD_SIMD == 2
#define VPARTS 1 /* registers per 16 fp32 lanes */
#define VX(op) _mm512_##op /* the intrinsic of this register width */
#define SI(op) _mm512_##op##_si512
typedef __m512 ps_t;
typedef __m512i si_t;
typedef __m512d pd_t;
#else
#define VPARTS 2
#define VX(op) _mm256_##op
#define SI(op) _mm256_##op##_si256
typedef __m256 ps_t;
typedef __m256i si_t;
typedef __m256d pd_t;
#endif
#define PART (16 / VPARTS) /* fp32 lanes per register */
/* S once per register of a vf / vi (EACH_V) or a vd (EACH_D), with the constant i as its index: written out
 * rather than looped, so that GCC keeps every part in a register (with loops it kept them on the stack:
 * the AVX2 statistics pass measured 2.4x slower). */
#if VPARTS == 1
#define EACH_V(...) { const int i = 0; __VA_ARGS__ }
#define EACH_D(...) { const int i = 0; __VA_ARGS__ } { const int i = 1; __VA_ARGS__ }
#else
#define EACH_V(...) { const int i = 0; __VA_ARGS__ } { const int i = 1; __VA_ARGS__ }
#define EACH_D(...) \
    { const int i = 0; __VA_ARGS__ } { const int i = 1; __VA_ARGS__ } { const int i = 2; __VA_ARGS__ } { const int i = 3; __VA_ARGS__ }
#endif
typedef struct { ps_t p[VPARTS]; } vf;
typedef struct { si_t p[VPARTS]; } vi;
typedef struct { pd_t p[2 * VPARTS]; } vd;

#define LANEWISE(T, EACH, name, op) INLINE T name(T a, T b) { EACH(a.p[i] = op(a.p[i], b.p[i]);) return a; }
LANEWISE(vf, EACH_V, vf_add, VX(add_ps)) LANEWISE(vf, EACH_V, vf_sub, VX(sub_ps))
LANEWISE(vf, EACH_V, vf_mul, VX(mul_ps)) LANEWISE(vf, EACH_V, vf_div, VX(div_ps))
LANEWISE(vf, EACH_V, vf_min, VX(min_ps)) LANEWISE(vf, EACH_V, vf_max, VX(max_ps))
LANEWISE(vi, EACH_V, vi_and, SI(and)) LANEWISE(vi, EACH_V, vi_or, SI(or)) LANEWISE(vi, EACH_V, vi_add, VX(add_epi32))
LANEWISE(vi, EACH_V, vi_sub, VX(sub_epi32)) LANEWISE(vi, EACH_V, vi_max, VX(max_epu32))
LANEWISE(vd, EACH_D, vd_add, VX(add_pd)) LANEWISE(vd, EACH_D, vd_sub, VX(sub_pd))
LANEWISE(vd, EACH_D, vd_mul, VX(mul_pd)) LANEWISE(vd, EACH_D, vd_div, VX(div_pd)) LANEWISE(vd, EACH_D, vd_max, VX(max_pd))
#undef LANEWISE

INLINE vf vf_set1(float a) { vf r; EACH_V(r.p[i] = VX(set1_ps)(a);) return r; }
INLINE vi vi_set1(uint32_t a) { vi r; EACH_V(r.p[i] = VX(set1_epi32)((int)a);) return r; }
INLINE vd vd_set1(double a) { vd r; EACH_D(r.p[i] = VX(set1_pd)(a);) return r; }
INLINE vi vi_shr(vi a, int n) { EACH_V(a.p[i] = VX(srli_epi32)(a.p[i], n);) return a; }
INLINE vd vd_fmadd(vd a, vd b, vd c) {
    EACH_D(c.p[i] = VX(fmadd_pd)(a.p[i], b.p[i], c.p[i]);)
    return c;
}
INLINE vd vd_abs(vd a) {
    EACH_D(a.p[i] = VX(andnot_pd)(VX(set1_pd)(-0.0), a.p[i]);)
    return a;
}
INLINE vf vf_loadf(const float *p) {
    vf r;
    EACH_V(r.p[i] = VX(loadu_ps)(p + i * PART);)
    return r;
}
/* `stream`: non-temporal stores, p 64-byte aligned. */
INLINE void vf_storef(float *p, vf v, int stream) {
    EACH_V(if (stream) VX(stream_ps)(p + i * PART, v.p[i]); else VX(storeu_ps)(p + i * PART, v.p[i]);)
}
INLINE uint32_t vi_hmax(vi a) {
    uint32_t l[16], m = 0;
    EACH_V(SI(storeu)((si_t *)(l + i * PART), a.p[i]);)
    for (int i = 0; i < 16; i++) m = l[i] > m ? l[i] : m;
    return m;
}
INLINE int64_t vi_hsum(vi a) {
    uint32_t l[16];
    int64_t s = 0;
    EACH_V(SI(storeu)((si_t *)(l + i * PART), a.p[i]);)
    for (int i = 0; i < 16; i++) s += l[i];
    return s;
}
INLINE double vd_hsum(vd a) {
    double l[16], s = 0.0;
    EACH_D(VX(storeu_pd)(l + i * PART / 2, a.p[i]);)
    for (int i = 0; i < 16; i++) s += l[i];
    return s;
}

#if SRDD_SIMD == 2
typedef __mmask16 vm;
INLINE vf vf_of(vi a) { return (vf){{_mm512_castsi512_ps(a.p[0])}}; }
INLINE vi vi_of(vf a) { return (vi){{_mm512_castps_si512(a.p[0])}}; }
#define COMPARE(name, pred) INLINE vm name(vf a, vf b) { return _mm512_cmp_ps_mask(a.p[0], b.p[0], pred); }
INLINE vm vi_gt(vi a, vi b) { return _mm512_cmpgt_epi32_mask(a.p[0], b.p[0]); }
/* lane by lane, m ? a : b */
INLINE vf vf_select(vm m, vf a, vf b) { return (vf){{_mm512_mask_mov_ps(b.p[0], m, a.p[0])}}; }
INLINE vm vm_and(vm a, vm b) { return a & b; }
INLINE vm vm_or(vm a, vm b) { return a | b; }
INLINE vm vm_andnot(vm a, vm b) { return (vm)(~a & b); }
INLINE vm vm_every(void) { return 0xFFFF; }
INLINE int vm_all(vm m) { return m == 0xFFFF; }
INLINE int vm_any(vm m) { return m != 0; }
/* c + 1 in the flagged lanes */
INLINE vi vi_count(vi c, vm m) { return (vi){{_mm512_mask_sub_epi32(c.p[0], m, c.p[0], _mm512_set1_epi32(-1))}}; }
INLINE vf vf_rint(vf a) {
    return (vf){{_mm512_roundscale_ps(a.p[0], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}};
}
INLINE vd vd_of(vf a) {
    return (vd){{_mm512_cvtps_pd(_mm512_castps512_ps256(a.p[0])), _mm512_cvtps_pd(_mm512_extractf32x8_ps(a.p[0], 1))}};
}
INLINE vf bf16_load16(const uint16_t *p) {
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    return (vf){{_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))}};
}
/* The upper halves of 16 u32 lanes, packed. */
INLINE __m256i bf16_pack16(vi r) { return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r.p[0], 16)); }
#else
typedef vf vm;
INLINE vf vf_of(vi a) { return (vf){{_mm256_castsi256_ps(a.p[0]), _mm256_castsi256_ps(a.p[1])}}; }
INLINE vi vi_of(vf a) { return (vi){{_mm256_castps_si256(a.p[0]), _mm256_castps_si256(a.p[1])}}; }
#define COMPARE(name, pred) \
    INLINE vm name(vf a, vf b) { return (vm){{_mm256_cmp_ps(a.p[0], b.p[0], pred), _mm256_cmp_ps(a.p[1], b.p[1], pred)}}; }
INLINE vm vi_gt(vi a, vi b) { return vf_of((vi){{_mm256_cmpgt_epi32(a.p[0], b.p[0]), _mm256_cmpgt_epi32(a.p[1], b.p[1])}}); }
INLINE vf vf_select(vm m, vf a, vf b) {
    return (vf){{_mm256_blendv_ps(b.p[0], a.p[0], m.p[0]), _mm256_blendv_ps(b.p[1], a.p[1], m.p[1])}};
}
INLINE vm vm_and(vm a, vm b) { return (vm){{_mm256_and_ps(a.p[0], b.p[0]), _mm256_and_ps(a.p[1], b.p[1])}}; }
INLINE vm vm_or(vm a, vm b) { return (vm){{_mm256_or_ps(a.p[0], b.p[0]), _mm256_or_ps(a.p[1], b.p[1])}}; }
INLINE vm vm_andnot(vm a, vm b) { return (vm){{_mm256_andnot_ps(a.p[0], b.p[0]), _mm256_andnot_ps(a.p[1], b.p[1])}}; }
INLINE vm vm_every(void) { return vf_of(vi_set1(0xFFFFFFFFu)); }
INLINE int vm_all(vm m) { return (_mm256_movemask_ps(m.p[0]) & _mm256_movemask_ps(m.p[1])) == 0xFF; }
INLINE int vm_any(vm m) { return _mm256_movemask_ps(_mm256_or_ps(m.p[0], m.p[1])) != 0; }
/* c - (-1) in the flagged lanes */
INLINE vi vi_count(vi c, vm m) { return vi_sub(c, vi_of(m)); }
INLINE vf vf_rint(vf a) {
    EACH_V(a.p[i] = _mm256_round_ps(a.p[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);)
    return a;
}
INLINE vd vd_of(vf a) {
    vd r;
    EACH_V(r.p[2 * i] = _mm256_cvtps_pd(_mm256_castps256_ps128(a.p[i]));
           r.p[2 * i + 1] = _mm256_cvtps_pd(_mm256_extractf128_ps(a.p[i], 1));)
    return r;
}
INLINE vf bf16_load16(const uint16_t *p) {
    vi r;
    EACH_V(r.p[i] = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 8 * i))), 16);)
    return vf_of(r);
}
INLINE __m256i bf16_pack16(vi r) {
    /* PACKUSDW interleaves the 128-bit lanes of its operands; the permute puts them back in order */
    __m256i h = _mm256_packus_epi32(_mm256_srli_epi32(r.p[0], 16), _mm256_srli_epi32(r.p[1], 16));
    return _mm256_permute4x64_epi64(h, _MM_SHUFFLE(3, 1, 2, 0));
}
#endif
COMPARE(vf_gt, _CMP_GT_OQ) COMPARE(vf_lt, _CMP_LT_OQ) COMPARE(vf_eq, _CMP_EQ_OQ) COMPARE(vf_ne, _CMP_NEQ_OQ)
COMPARE(vf_ne_or_nan, _CMP_NEQ_UQ) COMPARE(vf_unordered, _CMP_UNORD_Q)
#undef COMPARE

/* ------------------------------------------------------------------ vector numerics */

INLINE vf vf_abs(vf v) { return vf_of(vi_and(vi_of(v), vi_set1(0x7fffffffu))); }

INLINE vf load16(const void *x, int64_t i, int dtype) {
    return dtype == DT_F32 ? vf_loadf((const float *)x + i) : bf16_load16((const uint16_t *)x + i);
}

/* What group_scales finds out about a group. CLEAN: every block finite, every multiplier finite (a tiny
 * NVFP4 tensor scale can overflow 1 / pts / s8, and then 0 * inf makes q NaN) and every scale small enough
 * that no q can overflow. NORMAL: clean, and every scale 0 or large enough that every q (0 or at least the
 * smallest element, 2^(emin - mbits), times its scale) is a normal number or zero. BF16_EXACT: normal with
 * power-of-two (MX) scales, so every q has at most mbits + 1 <= 4 significant bits: a bf16 value already.
 * BOUNDED: clean two-level NVFP4, where no |v| reaches 7 and the E2M1 rounding alone saturates: pts =
 * amax / 2688 keeps every block's amax / 6 / pts within 448 (up to a few ulps: a finite multiplier means
 * pts >= 2^-122, 24 bits), and E4M3 rounds a block scale down by at most 1/16: |v| <= 6 * 17/16 + ulps. */
enum { GROUP_CLEAN = 1, GROUP_NORMAL = 2, GROUP_BF16_EXACT = 4, GROUP_BOUNDED = 8 };

/* bf16_bits of 16 values, in the upper halves of their fp32 bit patterns (the lower halves zero). */
INLINE vi bf16_round16(vf y) {
    vi u = vi_of(y);
    vi bias = vi_add(vi_and(vi_shr(u, 16), vi_set1(1)), vi_set1(0x7FFF));
    vf r = vf_of(vi_and(vi_add(u, bias), vi_set1(0xFFFF0000u)));
    return vi_of(vf_select(vf_unordered(y, y), vf_of(vi_set1(0x7FC00000u)), r));
}

/* bf16_bits of 16 values, packed; `flags`: the GROUP_* flags of their group. For values that are normal,
 * zero or infinite (GROUP_NORMAL) the AVX512-BF16 conversion rounds to nearest even like c10 in one
 * instruction (it flushes subnormals and keeps NaN signs, hence the restriction). */
INLINE __m256i bf16_bits16(vf y, int flags) {
#if SRDD_SIMD == 2 && defined(__AVX512BF16__)
    if (flags & GROUP_NORMAL) return (__m256i)_mm512_cvtneps_pbh(y.p[0]);
#endif
    (void)flags;
    return bf16_pack16(bf16_round16(y));
}

/* in_dtype of 16 values; `flags` as for bf16_bits16. */
INLINE vf in_dtype16(vf y, int dtype, int flags) {
    if (dtype == DT_F32 || (flags & GROUP_BF16_EXACT)) return y;
#if SRDD_SIMD == 2 && defined(__AVX512BF16__)
    if (flags & GROUP_NORMAL) {
        __m256i h = bf16_bits16(y, flags);
        return (vf){{_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))}};
    }
#endif
    return vf_of(bf16_round16(y));
}

INLINE void store16(void *y, int64_t i, vf v, int dtype, int stream, int flags) {
    if (dtype == DT_F32) {
        vf_storef((float *)y + i, v, stream);
        return;
    }
    __m256i h = bf16_bits16(v, flags);
    if (stream) _mm256_stream_si256((__m256i *)((uint16_t *)y + i), h);
    else _mm256_storeu_si256((__m256i *)((uint16_t *)y + i), h);
}

INLINE vi abs_bits16(vf v) { return vi_and(vi_of(v), vi_set1(0x7fffffffu)); }

/* round_element of 16 magnitudes (|v| >= 0, or NaN) by magic-number rounding: with a = min(|v|, max),
 * adding 2^(E+23-mbits) (E = exponent of max(a, 2^emin)) leaves exactly the element quantum 2^(E-mbits) as
 * the sum's ulp, so the fp32 addition rounds half-to-even onto the grid and the subtraction is exact: the
 * results of rint(v / quantum) * quantum clamped to max, in fewer operations (saturating first is the same:
 * max is on the grid and rounding is monotonic). MINPS returns its second operand when either is NaN, so
 * the constant goes first and NaN survives; Inf saturates like the reference. */
INLINE vf round_mag16(vf av, element el, int saturate) {
    vf a = saturate ? vf_min(vf_set1(el.max), av) : av;
    vi e = vi_and(vi_of(vf_max(a, vf_set1(pow2f(el.emin)))), vi_set1(0x7f800000u));
    vf magic = vf_of(vi_add(e, vi_set1((uint32_t)(23 - el.mbits) << 23)));
    return vf_sub(vf_add(a, magic), magic);
}

/* round_element of 16 signed values: the magnitude's rounding with v's sign put back (-0 stays -0). */
INLINE vf round16(vf v, element el, int saturate) {
    vi r = vi_of(round_mag16(vf_abs(v), el, saturate));
    return vf_of(vi_or(r, vi_and(vi_of(v), vi_set1(0x80000000u))));
}

/* The E2M1 codes (e2m1_code) of 16 values round16 gave, two a byte: 2|r| is 0, 1, 2, 3, 4, 6, 8 or 12, and its
 * rank is that less one above 4, one more above 6 and three more above 8. */
INLINE void codes16(vf r, uint8_t *c) {
    const vf zero = vf_set1(0.0f), one = vf_set1(1.0f);
    vf twice = vf_mul(vf_abs(r), vf_set1(2.0f)), rank = twice;
    rank = vf_sub(rank, vf_min(one, vf_max(zero, vf_sub(twice, vf_set1(4.0f)))));
    rank = vf_sub(rank, vf_min(one, vf_max(zero, vf_sub(twice, vf_set1(6.0f)))));
    rank = vf_sub(rank, vf_mul(vf_set1(3.0f), vf_min(one, vf_max(zero, vf_sub(twice, vf_set1(8.0f))))));
    vi code = vi_or(vi_of(vf_add(rank, vf_set1(0x1p23f))), vi_and(vi_shr(vi_of(r), 28), vi_set1(8)));
    uint32_t l[16];
    EACH_V(SI(storeu)((si_t *)(l + i * PART), code.p[i]);)
    for (int k = 0; k < 8; k++) c[k] = (uint8_t)((l[2 * k] & 15) | (l[2 * k + 1] & 15) << 4);
}

/* round_int4 of 16 values; MINPS/MAXPS return their second operand beside a NaN, so NaN survives. */
INLINE vf round_int4_16(vf v) {
    return vf_max(vf_set1(-INT4_QMAX - 1), vf_min(vf_set1(INT4_QMAX), vf_rint(v)));
}

/* v = x * m, or x / m for the formats whose reference divides. */
INLINE vf scale_in16(vf x, vf m, int fmt) { return divides(fmt) ? vf_div(x, m) : vf_mul(x, m); }

/* saturated1 of 16 values. */
INLINE vm saturated16(vf v, int fmt, element el) {
    if (is_int4(fmt)) {
        vf r = vf_rint(v);
        return vm_or(vf_gt(r, vf_set1(INT4_QMAX)), vf_lt(r, vf_set1(-INT4_QMAX - 1)));
    }
    return vf_gt(vf_abs(v), vf_set1(el.max));
}

/* The lane of block j's maximum in transpose_max16's result. */
static const int BLOCK_LANE[GROUP] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};

/* Lane BLOCK_LANE[j] of the result is the max over the 16 lanes of p[j] (unsigned, on |x| bit patterns):
 * a butterfly over 256-, 128-, 64- and 32-bit halves, 15 max operations for 16 blocks. */
INLINE vi transpose_max16(const vi p[GROUP]) {
    vi w[8], u[4], t[2];
#if SRDD_SIMD == 2
    for (int i = 0; i < 8; i++) {
        __m512i a = p[2 * i].p[0], b = p[2 * i + 1].p[0];
        w[i].p[0] = _mm512_max_epu32(_mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    for (int i = 0; i < 4; i++) {
        __m512i a = w[2 * i].p[0], b = w[2 * i + 1].p[0];
        u[i].p[0] = _mm512_max_epu32(_mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
    }
#else /* the same two steps with 128-bit chunks 0-1 in p[0] and 2-3 in p[1] */
    for (int i = 0; i < 8; i++) {
        w[i].p[0] = _mm256_max_epu32(p[2 * i].p[0], p[2 * i].p[1]);
        w[i].p[1] = _mm256_max_epu32(p[2 * i + 1].p[0], p[2 * i + 1].p[1]);
    }
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 2; k++) {
            __m256i lo = w[2 * i + k].p[0], hi = w[2 * i + k].p[1];
            u[i].p[k] = _mm256_max_epu32(_mm256_permute2x128_si256(lo, hi, 0x20),
                                         _mm256_permute2x128_si256(lo, hi, 0x31));
        }
#endif
    for (int k = 0; k < 2; k++) {
        EACH_V(t[k].p[i] = VX(max_epu32)(VX(unpacklo_epi64)(u[2 * k].p[i], u[2 * k + 1].p[i]),
                                         VX(unpackhi_epi64)(u[2 * k].p[i], u[2 * k + 1].p[i]));)
    }
    vf c = vf_of(t[0]), d = vf_of(t[1]), lo, hi;
    EACH_V(lo.p[i] = VX(shuffle_ps)(c.p[i], d.p[i], _MM_SHUFFLE(2, 0, 2, 0));
           hi.p[i] = VX(shuffle_ps)(c.p[i], d.p[i], _MM_SHUFFLE(3, 1, 3, 1));)
    return vi_max(vi_of(lo), vi_of(hi));
}

/* The 16 block scales of a group, lane BLOCK_LANE[j] for block j: mx_scale / nv_scale in vector form;
 * returns the GROUP_* flags. */
INLINE int group_scales(vi amax_bits, int fmt, tensor_scale t, float *mul, float *scale) {
    element el = element_of(fmt);
    vf amax = vf_of(amax_bits);
    vm bad = vi_gt(amax_bits, vi_set1(0x7f7fffffu)); /* Inf or NaN: |x| patterns compare as signed */
    vf m, s;
    if (is_nvfp4(fmt)) {
        vf v = vf_div(vf_div(amax, vf_set1(6.0f)), vf_set1(t.pts));
        v = vf_max(vf_set1(0x1p-6f), v);
        v = vf_min(vf_set1(448.0f), v);
        vi p2 = vi_and(vi_of(v), vi_set1(0x7f800000u));
        /* 8 / p2 from the exponent bits: p2 is a power of two in [2^-6, 2^8] (or Inf beside a NaN v, which
         * stays NaN), so this equals the exact quotient and saves a division per group */
        vf eight_over_p2 = vf_of(vi_sub(vi_set1(257u << 23), p2));
        vf s8 = vf_mul(vf_rint(vf_mul(v, eight_over_p2)), vf_mul(vf_of(p2), vf_set1(0.125f)));
        m = vf_div(vf_set1(t.inv_pts), s8);
        s = vf_mul(vf_set1(t.pts), s8);
        if (t.pts == 0.0f) m = s = vf_set1(0.0f);
        if (t.pts_bad) bad = vm_every();
    } else if (is_int4(fmt)) { /* m: the divisor */
        s = vf_div(amax, vf_set1(INT4_DIVISOR));
        m = vf_select(vf_eq(s, vf_set1(0.0f)), vf_set1(1.0f), s);
    } else if (fmt == FMT_FP8_TENSOR) { /* m: the divisor; a non-finite block makes pts non-finite too */
        s = vf_set1(t.pts);
        m = vf_set1(t.pts == 0.0f ? 1.0f : t.pts);
        if (t.pts_bad) bad = vm_every();
    } else {
        vf p2 = vf_of(vi_and(amax_bits, vi_set1(0x7f800000u)));
        s = vf_mul(p2, vf_set1(pow2f(-el.emax)));
        if (is_rceil(fmt)) {
            vf top = vf_mul(p2, vf_set1(el.max * pow2f(-el.emax)));
            s = vf_select(vf_gt(amax, top), vf_mul(s, vf_set1(2.0f)), s);
        }
        s = vf_max(vf_set1(0x1p-127f), s);
        m = vf_div(vf_set1(1.0f), s);
    }
    s = vf_select(bad, vf_set1(NAN), s);
    vf_storef(mul, m, 0);
    vf_storef(scale, s, 0);
    if (is_int4(fmt)) return 0; /* [-8, 7] is not sign-symmetric: statistics take the signed path */
    /* q <= max * s < 2^(emax + 1) * 2^(122 - emax): far from overflow (2^120 for E2M1) */
    if (!vm_all(vf_lt(s, vf_set1(pow2f(122 - el.emax)))) || !vm_all(vf_lt(m, vf_set1(INFINITY)))) return 0;
    int tiny = vm_any(vm_and(vf_lt(s, vf_set1(pow2f(-126 - el.emin + el.mbits))), vf_ne(s, vf_set1(0.0f))));
    int bounded = fmt == FMT_NVFP4 ? GROUP_BOUNDED : 0;
    if (tiny) return GROUP_CLEAN | bounded;
    return GROUP_CLEAN | GROUP_NORMAL | bounded | (is_mx(fmt) ? GROUP_BF16_EXACT : 0);
}

/* Block amaxima of group g (16 blocks of `block` = 16 or 32 elements) as a vector of bit patterns. */
INLINE vi group_amax(const void *x, int64_t off, int block, int dtype) {
    vi p[GROUP];
    for (int j = 0; j < GROUP; j++) {
        vi a = abs_bits16(load16(x, off + (int64_t)j * block, dtype));
        if (block == 32) a = vi_max(a, abs_bits16(load16(x, off + (int64_t)j * block + 16, dtype)));
        p[j] = a;
    }
    return transpose_max16(p);
}

enum { N_COUNTS = S_NONFINITE + 1 }; /* the counts lead the statistics vector */

typedef struct {
    vi count[N_COUNTS]; /* per lane, S_* order; below 2^31 between folds */
    int64_t folded[N_COUNTS];
    vi amax;
    vd x2, x4, err2, rel;
} vacc_t;

/* The f64 sums of 16 elements from |x| and |q| (q keeps the sign of x, so |q - x| = ||q| - |x||):
 * Sum (q - x)^2 and Sum |q - x| / |x| over nonzero x, with `powers` also Sum x^2 and Sum x^4. Where x is 0
 * so is q - x (every q that counts is finite), and dividing by DBL_MIN (below every nonzero fp32 |x|)
 * instead of 0 adds the 0 that the reference's mask does. */
INLINE void vsums16(vacc_t *a, vf ax, vf aq, int powers) {
    vd xd = vd_of(ax), d = vd_sub(vd_of(aq), xd);
    if (powers) {
        vd x2 = vd_mul(xd, xd);
        a->x2 = vd_add(a->x2, x2);
        a->x4 = vd_fmadd(x2, x2, a->x4);
    }
    a->err2 = vd_fmadd(d, d, a->err2);
    a->rel = vd_add(a->rel, vd_div(vd_abs(d), vd_max(xd, vd_set1(DBL_MIN))));
}

/* Sum x^2, Sum x^4 and the nonzero count of 16 |x|: NVFP4's tensor-amax pass does these while it waits
 * for memory, so the second pass is left with the sums that need q. */
INLINE void vpowers16(vacc_t *a, vf ax) {
    a->count[S_NONZERO] = vi_count(a->count[S_NONZERO], vf_ne_or_nan(ax, vf_set1(0.0f)));
    vd xd = vd_of(ax), x2 = vd_mul(xd, xd);
    a->x2 = vd_add(a->x2, x2);
    a->x4 = vd_fmadd(x2, x2, a->x4);
}

/* Statistics of 16 elements of a group that is not clean (NaN/Inf inputs or scales so large that q may
 * overflow): the masking of stats1(), elements with a non-finite q counted apart and left out. */
INLINE void vstats16_masked(vacc_t *a, vf xv, vf y, vm saturated, int dtype) {
    const vf zero = vf_set1(0.0f);
    vf q = in_dtype16(y, dtype, 0);
    vm invalid = vf_ne_or_nan(vf_sub(q, q), zero);
    xv = vf_select(invalid, zero, xv);
    q = vf_select(invalid, zero, q);
    a->count[S_NONFINITE] = vi_count(a->count[S_NONFINITE], invalid);
    vf ax = vf_abs(xv), aq = vf_abs(q);
    vm nz = vf_ne_or_nan(ax, zero);
    a->count[S_NONZERO] = vi_count(a->count[S_NONZERO], nz);
    a->count[S_DEADZONE] = vi_count(a->count[S_DEADZONE], vm_and(nz, vf_eq(aq, zero)));
    a->count[S_SATURATED] = vi_count(a->count[S_SATURATED], vm_andnot(invalid, saturated));
    a->amax = vi_max(a->amax, vi_of(ax));
    vsums16(a, ax, aq, 1);
}

/* Statistics of 16 elements of a clean group (every q finite, scales positive): on magnitudes, since
 * |x * m| = |x| * m and |round(v) * s| = round(|v|) * s; amax comes from the block maxima, and with
 * `powers` == 0 the tensor-amax pass has already summed x^2, x^4 and the nonzero count. */
INLINE void vstats16_clean(vacc_t *a, vf xv, vf m, vf s, int fmt, element el, int saturate, int dtype,
                           int powers, int flags) {
    const vf zero = vf_set1(0.0f);
    vf ax = vf_abs(xv), av = scale_in16(ax, m, fmt);
    vf aq = in_dtype16(vf_mul(round_mag16(av, el, saturate), s), dtype, flags);
    vm nz = vf_ne_or_nan(ax, zero);
    if (powers) a->count[S_NONZERO] = vi_count(a->count[S_NONZERO], nz);
    a->count[S_DEADZONE] = vi_count(a->count[S_DEADZONE], vm_and(nz, vf_eq(aq, zero)));
    a->count[S_SATURATED] = vi_count(a->count[S_SATURATED], vf_gt(av, vf_set1(el.max)));
    vsums16(a, ax, aq, powers);
}

/* Two-level summation: a chunk's sums are added into the thread's totals, so each f64 lane adds about
 * (chunk + n / chunk) terms instead of n (agreement with torch's pairwise float64 sums to 1e-12 at 16M);
 * the lane counts move into int64 before they can overflow. */
INLINE void fold(vacc_t *chunk, vacc_t *total) {
    for (int k = 0; k < N_COUNTS; k++) total->folded[k] += chunk->folded[k] + vi_hsum(chunk->count[k]);
    total->amax = vi_max(total->amax, chunk->amax);
    total->x2 = vd_add(total->x2, chunk->x2);
    total->x4 = vd_add(total->x4, chunk->x4);
    total->err2 = vd_add(total->err2, chunk->err2);
    total->rel = vd_add(total->rel, chunk->rel);
    memset(chunk, 0, sizeof *chunk);
}

INLINE void flush_all(vacc_t *v, acc_t *a) {
    int64_t n[N_COUNTS];
    for (int k = 0; k < N_COUNTS; k++) n[k] = v->folded[k] + vi_hsum(v->count[k]);
    a->nonzero += n[S_NONZERO];
    a->deadzone += n[S_DEADZONE];
    a->saturated += n[S_SATURATED];
    a->nonfinite += n[S_NONFINITE];
    uint32_t m = vi_hmax(v->amax);
    a->amax = m > a->amax ? m : a->amax;
    a->x2 += vd_hsum(v->x2);
    a->x4 += vd_hsum(v->x4);
    a->err2 += vd_hsum(v->err2);
    a->rel += vd_hsum(v->rel);
}

/* The scales of group g: read its 16 blocks (prefetching ahead), return its GROUP_* flags. */
INLINE int group_prepare(const void *x, int64_t g, int block, int fmt, int dtype, tensor_scale t, float *mul,
                         float *scale, vi *amax) {
    int64_t off = g * GROUP * block;
    int esize = dtype == DT_F32 ? 4 : 2;
    /* Without a prefetch every group would wait for DRAM (measured 2.5x slower); fetching the lines
     * PREFETCH_AHEAD bytes on, rather than the next group's, also covers DRAM latency at fp32 speed (measured
     * 8-18 % faster at 64 MiB than one group ahead). Past the end is harmless. */
    const char *ahead = (const char *)x + off * esize + PREFETCH_AHEAD;
    for (int l = 0; l < GROUP * block * esize; l += 64) _mm_prefetch(ahead + l, _MM_HINT_T0);
    *amax = group_amax(x, off, block, dtype);
    return group_scales(*amax, fmt, t, mul, scale);
}

/* Group g with its scales: round trip into y, statistics into v, or its E2M1 codes and block scales into pk. */
INLINE void group_apply(const void *x, void *y, vacc_t *v, packed_t *pk, int64_t g, int block, int fmt, int dtype,
                        const float *mul, const float *scale, int flags, int stream, int powers) {
    int64_t off = g * GROUP * block;
    element el = element_of(fmt);
    int sat = !(flags & GROUP_BOUNDED);
    if (pk && !(flags & GROUP_CLEAN)) {
        pk->unclean = 1;
        return;
    }
    for (int j = 0; j < GROUP; j++) {
        vf m = vf_set1(mul[BLOCK_LANE[j]]), s = vf_set1(scale[BLOCK_LANE[j]]);
        if (pk) pk->scales[g * GROUP + j] = scale[BLOCK_LANE[j]];
        for (int h = 0; h < block; h += 16) {
            int64_t i = off + (int64_t)j * block + h;
            vf xv = load16(x, i, dtype);
            if (v && (flags & GROUP_CLEAN)) {
                vstats16_clean(v, xv, m, s, fmt, el, sat, dtype, powers, flags);
                continue;
            }
            vf vv = scale_in16(xv, m, fmt);
            vf r = is_int4(fmt) ? round_int4_16(vv) : round16(vv, el, sat);
            if (pk) {
                codes16(r, pk->codes + i / 2);
                continue;
            }
            vf q = vf_mul(r, s);
            if (y) store16(y, i, q, dtype, stream, flags);
            else vstats16_masked(v, xv, q, saturated16(vv, fmt, el), dtype);
        }
    }
}

/* Groups [g0, g1) into y, v or pk, software-pipelined: the scales of group g+1 (block maxima -> divisions ->
 * scales, a long dependency chain) are computed while group g is applied (measured 1.5x on NVFP4). */
INLINE void groups_simd(const void *x, void *y, vacc_t *v, packed_t *pk, int64_t g0, int64_t g1, int block, int fmt,
                        int dtype, tensor_scale t, int stream, int powers) {
    float mul[2][GROUP], scale[2][GROUP];
    int flags[2];
    vi amax[2];
    if (g0 >= g1) return;
    flags[0] = group_prepare(x, g0, block, fmt, dtype, t, mul[0], scale[0], &amax[0]);
    for (int64_t g = g0; g < g1; g++) {
        int cur = (int)((g - g0) & 1);
        if (g + 1 < g1)
            flags[cur ^ 1] = group_prepare(x, g + 1, block, fmt, dtype, t, mul[cur ^ 1], scale[cur ^ 1], &amax[cur ^ 1]);
        group_apply(x, y, v, pk, g, block, fmt, dtype, mul[cur], scale[cur], flags[cur], stream, powers);
        if (v && (flags[cur] & GROUP_CLEAN)) v->amax = vi_max(v->amax, amax[cur]);
    }
}

/* One thread's share [g0, g1) of the groups, with the format and dtype as constants so that the compiler
 * specialises each case. */
INLINE void groups_dispatch(const void *x, void *y, vacc_t *v, packed_t *pk, int64_t g0, int64_t g1, int fmt, int dtype,
                            tensor_scale t, int stream, int powers) {
#define SRDD_CASE(f, d) \
    case (f) * 2 + (d): groups_simd(x, y, v, pk, g0, g1, block_of(f), f, d, t, stream, powers); break;
#define SRDD_FORMAT(f) SRDD_CASE(f, DT_F32) SRDD_CASE(f, DT_BF16)
    switch (fmt * 2 + dtype) {
    SRDD_FORMAT(0) SRDD_FORMAT(1) SRDD_FORMAT(2) SRDD_FORMAT(3) SRDD_FORMAT(4) SRDD_FORMAT(5)
    SRDD_FORMAT(6) SRDD_FORMAT(7) SRDD_FORMAT(8) SRDD_FORMAT(9) SRDD_FORMAT(FMT_NVFP4) SRDD_FORMAT(FMT_NVFP4_ONE_LEVEL)
    SRDD_FORMAT(FMT_INT4_G32) SRDD_FORMAT(FMT_INT4_G16) SRDD_FORMAT(FMT_FP8_TENSOR)
    }
#undef SRDD_FORMAT
#undef SRDD_CASE
}
_Static_assert(FMT_NVFP4 == 10 && N_FORMATS == 15, "groups_dispatch lists every format code");
#endif /* SRDD_SIMD */

/* ------------------------------------------------------------------ drivers */

INLINE int threads_for(int nthreads) {
    if (nthreads < 1) return 1;
    return nthreads > MAX_THREADS ? MAX_THREADS : nthreads;
}

INLINE void thread_share(int64_t n, int64_t *lo, int64_t *hi) {
    int tid = 0, nt = 1;
#ifdef _OPENMP
    tid = omp_get_thread_num();
    nt = omp_get_num_threads();
#endif
    *lo = n * tid / nt;
    *hi = n * (tid + 1) / nt;
}

INLINE int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

INLINE void powers1(acc_t *a, float xv) {
    double x2 = (double)xv * xv;
    a->nonzero += xv != 0.0f;
    a->x2 += x2;
    a->x4 += x2 * x2;
}

/* Max |x| bit pattern over n elements (NaN patterns above Inf), for NVFP4's tensor scale.
 * `powers` (per thread, MAX_THREADS + 1 entries, may be 0): also Sum x^2, Sum x^4 and nonzero counts. */
static uint32_t tensor_amax_bits(const void *x, acc_t *powers, int64_t n, int dtype, int nthreads) {
    uint32_t part[MAX_THREADS] = {0}, m = 0;
    int64_t done = 0;
#if SRDD_SIMD
    int64_t nv = n / 16;
#pragma omp parallel num_threads(nthreads)
    {
        int64_t v0, v1;
        thread_share(nv, &v0, &v1);
        vi acc = vi_set1(0);
        vacc_t chunk, total;
        memset(&chunk, 0, sizeof chunk);
        memset(&total, 0, sizeof total);
        for (int64_t c = v0; c < v1; c += 1024) {
            int64_t end = c + 1024 < v1 ? c + 1024 : v1;
            for (int64_t i = c; i < end; i++) {
                vf ax = vf_abs(load16(x, i * 16, dtype));
                acc = vi_max(acc, vi_of(ax));
                if (powers) vpowers16(&chunk, ax);
            }
            if (powers) fold(&chunk, &total);
        }
        part[thread_id()] = vi_hmax(acc);
        if (powers) flush_all(&total, &powers[thread_id()]);
    }
    done = nv * 16;
#else
    (void)nthreads; /* the scalar loop below runs on the calling thread */
#endif
    for (int i = 0; i < MAX_THREADS; i++) m = part[i] > m ? part[i] : m;
    for (int64_t i = done; i < n; i++) {
        float xv = load1(x, i, dtype);
        uint32_t u = f2u(xv) & 0x7fffffffu;
        m = u > m ? u : m;
        if (powers) powers1(&powers[MAX_THREADS], xv);
    }
    return m;
}

static tensor_scale tensor_part(const void *x, acc_t *powers, int64_t n, int fmt, int dtype, int nthreads,
                             uint32_t *amax_bits) {
    tensor_scale t = {1.0f, 1.0f, 0};
    *amax_bits = 0;
    if (fmt == FMT_NVFP4 || fmt == FMT_FP8_TENSOR) {
        *amax_bits = tensor_amax_bits(x, powers, n, dtype, nthreads);
        t.pts = u2f(*amax_bits) / (fmt == FMT_NVFP4 ? 2688.0f : element_of(fmt).max);
        t.pts_bad = !isfinite(t.pts);
        t.inv_pts = 1.0f / t.pts;
    }
    return t;
}


INLINE int valid_args(int64_t nblocks, int fmt, int dtype) {
    return nblocks >= 0 && fmt >= 0 && fmt < N_FORMATS && (dtype == DT_F32 || dtype == DT_BF16);
}

#if SRDD_SIMD
/* Groups [g0, g1) into fresh output memory, FAULT_GROUPS at a time: each chunk first touches its output
 * pages, fetching the x lines of every page while that page faults in, then stores into the pages the
 * kernel has just zeroed through the cache. The faults (about 1.5 us a page here, as much as all the rest
 * of a large call) then overlap the reads of x instead of following them. `backward` (x was just read
 * whole for the tensor amax): the last chunk first, so that the end of the thread's share, still in cache
 * from that read, is not fetched from DRAM a second time. */
static void groups_fresh(const void *x, void *y, int64_t g0, int64_t g1, int fmt, int dtype, tensor_scale t,
                         int backward) {
    int64_t group_bytes = (int64_t)GROUP * block_of(fmt) * (dtype == DT_F32 ? 4 : 2);
    int64_t nchunks = (g1 - g0 + FAULT_GROUPS - 1) / FAULT_GROUPS;
    for (int64_t k = 0; k < nchunks; k++) {
        int64_t c = g0 + (backward ? nchunks - 1 - k : k) * FAULT_GROUPS;
        int64_t end = c + FAULT_GROUPS < g1 ? c + FAULT_GROUPS : g1;
        /* x and y share offsets; each 4 KiB step of y lands on a page not touched before */
        for (int64_t b = c * group_bytes; b < end * group_bytes; b += 4096) {
            for (int64_t l = b; l < b + 4096; l += 64) _mm_prefetch((const char *)x + l, _MM_HINT_T1);
            ((volatile char *)y)[b] = 0;
        }
        groups_dispatch(x, y, 0, 0, c, end, fmt, dtype, t, 0, 1);
    }
}

/* Whether every page of y is present. Allocators hand out recycled memory as well as fresh pages (glibc
 * reuses coalesced free chunks of any size; jemalloc and tcmalloc keep large ones), and only fresh pages
 * fault. Fresh memory fails on the first page; a full check of 64 MiB costs about 50 us. */
static int pages_present(const void *y, int64_t bytes) {
#ifdef __linux__
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)y & ~(page - 1), hi = ((uintptr_t)y + bytes + page - 1) & ~(page - 1);
    unsigned char vec[4096];
    for (uintptr_t a = lo, span = page; a < hi; a += span, span = sizeof vec * page) {
        size_t len = hi - a < span ? hi - a : span;
        if (mincore((void *)a, len, vec) != 0) return 0;
        for (size_t i = 0; i < (len + page - 1) / page; i++)
            if (!(vec[i] & 1)) return 0;
    }
    return 1;
#else
    (void)y;
    (void)bytes;
    return 0;
#endif
}
#endif

/* y = fake_quantize(x) for `nblocks` contiguous blocks. Returns 0, or -1 for bad arguments.
 * `existing`: y is the caller's memory, not an allocation just made for the result. A large y whose pages
 * are all present bypasses the cache (plain stores would first read every cold line back from DRAM); a
 * large y with pages still to fault has the faults overlapped with the reads of x (groups_fresh). */
SRDD_API int srdd_round_trip(const void *x, void *y, int64_t nblocks, int fmt, int dtype, int nthreads,
                             int existing) {
    if (!valid_args(nblocks, fmt, dtype) || !y) return -1;
    nthreads = threads_for(nthreads);
    int block = block_of(fmt);
    uint32_t amax_bits;
    tensor_scale t = tensor_part(x, 0, nblocks * block, fmt, dtype, nthreads, &amax_bits);
    int64_t done = 0;
#if SRDD_SIMD
    int64_t ngroups = nblocks / GROUP, bytes = nblocks * block * (dtype == DT_F32 ? 4 : 2);
    /* below this size y may stay in cache, and a fresh-looking allocation is mostly recycled heap memory
     * (measured: touching ahead only costs there) */
    int large = bytes >= STREAM_MIN_BYTES;
    int present = large && (existing || pages_present(y, bytes));
    int stream = present && ((uintptr_t)y & 63) == 0;
    int reread = fmt == FMT_NVFP4 || fmt == FMT_FP8_TENSOR; /* tensor_part read x whole */
#pragma omp parallel num_threads(nthreads)
    {
        int64_t g0, g1;
        thread_share(ngroups, &g0, &g1);
        if (large && !present) groups_fresh(x, y, g0, g1, fmt, dtype, t, reread);
        else groups_dispatch(x, y, 0, 0, g0, g1, fmt, dtype, t, stream, 1);
        if (stream) _mm_sfence(); /* each thread orders its streamed stores before the join */
    }
    done = ngroups * GROUP;
#else
    (void)existing; /* the scalar path stores the same way into any memory */
#endif
    blocks_scalar(x, y, 0, done, nblocks, block, fmt, dtype, t);
    return 0;
}

/* out[NSTATS] = the stats_vector() sums for `nblocks` contiguous blocks. Returns 0, or -1 for bad arguments.
 * Two-level NVFP4 reads x twice anyway (tensor amax, then the blocks): when the tensor is finite and small
 * enough that every group is clean, the first pass also sums x^2, x^4 and the nonzero count (memory-bound,
 * so they come free) and the second pass only what needs q. */
SRDD_API int srdd_stats(const void *x, int64_t nblocks, int fmt, int dtype, int nthreads, double *out) {
    if (!valid_args(nblocks, fmt, dtype) || !out) return -1;
    nthreads = threads_for(nthreads);
    int block = block_of(fmt);
    acc_t part[MAX_THREADS + 1], powers[MAX_THREADS + 1];
    memset(part, 0, sizeof part);
    memset(powers, 0, sizeof powers);
    uint32_t amax_bits;
    tensor_scale t = tensor_part(x, SRDD_SIMD ? powers : 0, nblocks * block, fmt, dtype, nthreads, &amax_bits);
    /* every group clean: amax < 2^120 puts every block finite and every scale below group_scales' bound;
     * for NVFP4, 1 / pts * 64 (the multiplier of the smallest block scale, 2^-6) finite keeps every
     * multiplier finite (FP8's divisor always is) */
    int split = SRDD_SIMD && amax_bits < 0x7b800000u &&
                (fmt == FMT_FP8_TENSOR || (fmt == FMT_NVFP4 && isfinite(t.inv_pts * 64.0f)));
    int64_t done = 0;
#if SRDD_SIMD
    int64_t ngroups = nblocks / GROUP;
#pragma omp parallel num_threads(nthreads)
    {
        int64_t g0, g1;
        thread_share(ngroups, &g0, &g1);
        vacc_t chunk, total;
        memset(&chunk, 0, sizeof chunk);
        memset(&total, 0, sizeof total);
        for (int64_t c = g0; c < g1; c += FOLD_GROUPS) {
            groups_dispatch(x, 0, &chunk, 0, c, c + FOLD_GROUPS < g1 ? c + FOLD_GROUPS : g1, fmt, dtype, t, 0, !split);
            fold(&chunk, &total);
        }
        flush_all(&total, &part[thread_id()]);
    }
    done = ngroups * GROUP;
#endif
    blocks_scalar(x, 0, &part[MAX_THREADS], done, nblocks, block, fmt, dtype, t);
    acc_t total;
    memset(&total, 0, sizeof total);
    for (int i = 0; i <= MAX_THREADS; i++) { /* fixed order: the same thread count gives the same sums */
        const acc_t *p = split ? &powers[i] : &part[i];
        total.nonzero += p->nonzero;
        total.x2 += p->x2;
        total.x4 += p->x4;
        total.amax = part[i].amax > total.amax ? part[i].amax : total.amax;
        total.deadzone += part[i].deadzone;
        total.saturated += part[i].saturated;
        total.nonfinite += part[i].nonfinite;
        total.err2 += part[i].err2;
        total.rel += part[i].rel;
    }
    if (split) total.amax = amax_bits;
    out[S_NONZERO] = (double)total.nonzero;
    out[S_DEADZONE] = (double)total.deadzone;
    out[S_SATURATED] = (double)total.saturated;
    out[S_NONFINITE] = (double)total.nonfinite;
    out[S_X2] = total.x2;
    out[S_X4] = total.x4;
    out[S_ERR2] = total.err2;
    out[S_REL] = total.rel;
    out[S_AMAX] = (double)u2f(total.amax);
    return 0;
}

/* ------------------------------------------------------------------ packed E2M1 weights
 * A frozen weight's fake-quantized values held as what they are: a 4-bit E2M1 code per element (two a byte,
 * the even element in the low nibble) and one fp32 scale per block, 0.75 bytes a weight under NVFP4 and
 * 0.625 under MXFP4 instead of fp32's 4. The round trip's last operation is round_element(v) * s.scale, one
 * fp32 multiplication of an E2M1 value by its block's scale, so unpacking, the same multiplication of the
 * code's value by the stored scale, gives its bits. */

static const float E2M1_VALUES[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                      -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

INLINE int has_e2m1(int fmt) { return fmt == 2 * EL_E2M1 || fmt == 2 * EL_E2M1 + 1 || is_nvfp4(fmt); }

/* The code of a value round_element gave for E2M1: its sign in bit 3, its magnitude's rank in bits 0-2. */
INLINE uint8_t e2m1_code(float e) {
    int twice = (int)(fabsf(e) * 2.0f); /* 0, 1, 2, 3, 4, 6, 8, 12 */
    int rank = twice <= 4 ? twice : (twice == 6 ? 5 : (twice == 8 ? 6 : 7));
    return (uint8_t)(rank | (f2u(e) >> 31) << 3);
}

/* Blocks [b0, b1) packed one at a time (the tail of the vector path, or all of it without one); returns whether
 * a value would be NaN. */
INLINE int blocks_pack_scalar(const float *x, uint8_t *codes, float *scales, int64_t b0, int64_t b1, int fmt,
                              tensor_scale t) {
    element el = element_of(fmt);
    int block = block_of(fmt), nan = 0;
    for (int64_t b = b0; b < b1; b++) {
        const float *xb = x + b * block;
        block_scale s = scale_for(amax_bits_scalar(xb, 0, block, DT_F32), fmt, t);
        scales[b] = s.scale;
        nan |= s.scale != s.scale;
        for (int i = 0; i < block; i += 2) {
            float lo = round_element(xb[i] * s.mul, el), hi = round_element(xb[i + 1] * s.mul, el);
            nan |= (lo != lo) | (hi != hi);
            codes[(b * block + i) / 2] = (uint8_t)(e2m1_code(lo) | e2m1_code(hi) << 4);
        }
    }
    return nan;
}

/* codes[nblocks * block / 2] and scales[nblocks]: fake_quantize(x) of fp32 x, packed, by the round trip's own
 * code (its vector path's rounding, its scales). Returns 0; 1 when the values may hold what no code does (NaN:
 * a non-finite block or tensor scale, an infinite multiplier; the vector path also stops at scales large
 * enough for a value to overflow, which no weight has), and the caller keeps fp32 values; -1 for bad arguments. */
SRDD_API int srdd_pack_e2m1(const float *x, uint8_t *codes, float *scales, int64_t nblocks, int fmt,
                            int nthreads) {
    if (!valid_args(nblocks, fmt, DT_F32) || !has_e2m1(fmt) || !x || !codes || !scales) return -1;
    nthreads = threads_for(nthreads);
    uint32_t amax_bits;
    tensor_scale t = tensor_part(x, 0, nblocks * block_of(fmt), fmt, DT_F32, nthreads, &amax_bits);
    int unclean = 0;
    int64_t done = 0;
#if SRDD_SIMD
    int64_t ngroups = nblocks / GROUP;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1) reduction(| : unclean)
    {
        int64_t g0, g1;
        thread_share(ngroups, &g0, &g1);
        packed_t pk = {codes, scales, 0};
        groups_dispatch(x, 0, 0, &pk, g0, g1, fmt, DT_F32, t, 0, 1);
        unclean |= pk.unclean;
    }
    done = ngroups * GROUP;
#endif
    return unclean | blocks_pack_scalar(x, codes, scales, done, nblocks, fmt, t);
}

/* 16 elements of y from 8 bytes of codes and their scale. */
INLINE void unpack16(const uint8_t *c, float scale, float *y) {
#if SRDD_SIMD == 2
    __m128i bytes = _mm_loadl_epi64((const __m128i *)c), low4 = _mm_set1_epi8(0x0f);
    __m128i nibbles = _mm_unpacklo_epi8(_mm_and_si128(bytes, low4), _mm_and_si128(_mm_srli_epi16(bytes, 4), low4));
    __m512 v = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(nibbles), _mm512_loadu_ps(E2M1_VALUES));
    _mm512_storeu_ps(y, _mm512_mul_ps(v, _mm512_set1_ps(scale)));
#elif SRDD_SIMD == 1
    __m128i bytes = _mm_loadl_epi64((const __m128i *)c), low4 = _mm_set1_epi8(0x0f);
    __m128i nibbles = _mm_unpacklo_epi8(_mm_and_si128(bytes, low4), _mm_and_si128(_mm_srli_epi16(bytes, 4), low4));
    __m256 magnitudes = _mm256_loadu_ps(E2M1_VALUES), s = _mm256_set1_ps(scale);
    for (int h = 0; h < 2; h++) {
        __m256i code = _mm256_cvtepu8_epi32(h ? _mm_srli_si128(nibbles, 8) : nibbles);
        __m256i sign = _mm256_slli_epi32(_mm256_srli_epi32(code, 3), 31); /* vpermps reads bits 0-2 only */
        __m256 v = _mm256_xor_ps(_mm256_permutevar8x32_ps(magnitudes, code), _mm256_castsi256_ps(sign));
        _mm256_storeu_ps(y + 8 * h, _mm256_mul_ps(v, s));
    }
#else
    for (int i = 0; i < 8; i++) {
        y[2 * i] = E2M1_VALUES[c[i] & 0x0f] * scale;
        y[2 * i + 1] = E2M1_VALUES[c[i] >> 4] * scale;
    }
#endif
}

/* y[nblocks * block] = the values srdd_pack_e2m1 packed (block 16 or 32). Returns 0, or -1 for bad arguments. */
SRDD_API int srdd_unpack_e2m1(const uint8_t *codes, const float *scales, float *y, int64_t nblocks, int block,
                              int nthreads) {
    if (nblocks < 0 || (block != 16 && block != 32) || !codes || !scales || !y) return -1;
    nthreads = threads_for(nthreads);
    int64_t n16 = nblocks * block / 16, per_scale = block / 16;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        int64_t j0, j1;
        thread_share(n16, &j0, &j1);
        for (int64_t j = j0; j < j1; j++) unpack16(codes + 8 * j, scales[j / per_scale], y + 16 * j);
    }
    return 0;
}
