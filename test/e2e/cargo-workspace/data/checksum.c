/* Compiled by the package's build script with the cc crate (the C toolchain in the build-script
 * sandbox), archived into OUT_DIR and linked into the program. */
#include <stddef.h>
#include <stdint.h>

uint32_t demo_fletcher32(const uint8_t *data, size_t len) {
    uint32_t a = 0xffff, b = 0xffff;
    for (size_t i = 0; i < len; i++) {
        a = (a + data[i]) % 65535;
        b = (b + a) % 65535;
    }
    return (b << 16) | a;
}
