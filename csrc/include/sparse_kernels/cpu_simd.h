// Run-time SIMD dispatch for the CPU kernels: on x86-64 with GCC each
// dispatched function is compiled twice (target_clones: AVX2+FMA "haswell"
// and the portable baseline) and the loader picks the clone the CPU
// supports, so the default build needs no -march flags.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define SK_CPU_CLONES __attribute__((target_clones("arch=haswell", "default")))
#define SK_CPU_PATHS_JSON "\"avx2+fma\", \"generic\""
#define SK_CPU_HAS_CLONES 1
#else
#define SK_CPU_CLONES
#define SK_CPU_PATHS_JSON "\"generic\""
#define SK_CPU_HAS_CLONES 0
#endif
