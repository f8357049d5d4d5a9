// Run-time SIMD dispatch for the CPU kernels: on x86-64 with GCC each
// dispatched function is compiled twice (target_clones: AVX2+FMA and the
// portable baseline) and the loader picks the clone the CPU supports, so the
// default build needs no -march flags.
//
// The AVX2 clone is "arch=x86-64-v3", which the resolver picks by the CPU's
// features. An "arch=haswell" clone is picked only on a CPU whose model *is*
// Haswell: on AMD Zen and on every later Intel core its resolver chose the
// portable clone (measured on this project's AMD EPYC build machine, where
// build_info's dispatched probe read "generic" until this changed).
// GCC before 12 has no x86-64-v3 clones; there the AVX2 clone is "avx2"
// (picked by the AVX2 feature bit; no FMA contraction).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#if __GNUC__ >= 12
#define SK_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define SK_CPU_CLONE_PATH "avx2+fma"
#else
#define SK_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#define SK_CPU_CLONE_PATH "avx2"
#endif
#define SK_CPU_PATHS_JSON "\"" SK_CPU_CLONE_PATH "\", \"generic\""
#define SK_CPU_HAS_CLONES 1
#else
#define SK_CPU_CLONES
#define SK_CPU_PATHS_JSON "\"generic\""
#define SK_CPU_HAS_CLONES 0
#endif

namespace sparse_kernels::cpu {
// Whether this CPU runs AVX2 and FMA (read once): the run-time choice of the
// explicit AVX2 kernels (cpu_tiled.cpp, cpu_gathered.cpp), which are not
// clones. False on builds without those kernels.
bool cpu_has_avx2_fma();
}  // namespace sparse_kernels::cpu
