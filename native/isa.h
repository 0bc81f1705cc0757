/* Which instruction set the block quantizers run on: the scalar reference, AVX2 or AVX-512.
 *
 * Every path writes the same bytes (the SIMD kernels keep each block's float operations in the
 * reference's order); the choice only changes speed. At start-up the best one the CPU (and the
 * OS, which must save the wide registers) supports is taken, unless QCONVERT_ISA names another;
 * qc_isa_set switches at run time, for tests that compare the paths.
 */
#ifndef QCONVERT_ISA_H
#define QCONVERT_ISA_H

enum qc_isa { QC_ISA_SCALAR, QC_ISA_AVX2, QC_ISA_AVX512, QC_ISA_COUNT };

/* The x86 SIMD kernels are built only where GCC/Clang can target them per function. */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define QC_HAVE_X86_SIMD 1
#else
#define QC_HAVE_X86_SIMD 0
#endif

/* Whether this CPU can run `isa`. */
int qc_isa_supported(enum qc_isa isa);
/* The path the quantizers take now. */
enum qc_isa qc_isa_active(void);
/* Take `isa` from now on; -1 (and no change) if the CPU cannot run it. */
int qc_isa_set(enum qc_isa isa);
/* "scalar", "avx2", "avx512"; and back (-1 for an unknown name). */
const char *qc_isa_name(enum qc_isa isa);
int qc_isa_from_name(const char *name);
/* The start-up choice: QCONVERT_ISA if set (0), else the best supported; -1 if QCONVERT_ISA names
 * an unknown or unsupported path (the best supported is taken then). */
int qc_isa_init(void);

#endif
