/* Run-time choice of the quantizers' instruction set (isa.h). */
#include "isa.h"

#include <stdlib.h>
#include <string.h>

static const char *const NAMES[QC_ISA_COUNT] = {"scalar", "avx2", "avx512"};
static enum qc_isa active = QC_ISA_SCALAR;

int qc_isa_supported(enum qc_isa isa) {
    if (isa == QC_ISA_SCALAR) return 1;
#if QC_HAVE_X86_SIMD
    /* libgcc's checks include the OS's XCR0 state, so a kernel that does not save the registers
     * reads as unsupported. F16C widens f16 input; BW/VL/DQ give the byte and mask instructions. */
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (isa == QC_ISA_AVX2) return avx2;
    if (isa == QC_ISA_AVX512)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq");
#endif
    return 0;
}

enum qc_isa qc_isa_active(void) { return active; }

int qc_isa_set(enum qc_isa isa) {
    if ((int)isa < 0 || isa >= QC_ISA_COUNT || !qc_isa_supported(isa)) return -1;
    active = isa;
    return 0;
}

const char *qc_isa_name(enum qc_isa isa) { return (int)isa >= 0 && isa < QC_ISA_COUNT ? NAMES[isa] : "unknown"; }

int qc_isa_from_name(const char *name) {
    for (int i = 0; i < QC_ISA_COUNT; i++)
        if (strcmp(name, NAMES[i]) == 0) return i;
    return -1;
}

int qc_isa_init(void) {
    int best = QC_ISA_SCALAR;
    for (int i = QC_ISA_COUNT - 1; i > QC_ISA_SCALAR; i--) {
        if (qc_isa_supported((enum qc_isa)i)) {
            best = i;
            break;
        }
    }
    active = (enum qc_isa)best;
    const char *env = getenv("QCONVERT_ISA");
    if (!env || !*env) return 0;
    const int want = qc_isa_from_name(env);
    return want >= 0 && qc_isa_set((enum qc_isa)want) == 0 ? 0 : -1;
}
