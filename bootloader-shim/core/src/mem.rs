//! Compact memory routines (feature `compact-mem`): `memcpy`, `memset`/`__aeabi_memclr` and
//! `memcmp` (with the ARM EABI aliases the compiler calls), 114 bytes in all instead of the
//! ≈ 1.7 KB of `compiler_builtins`' unrolled versions (issue 12: the shim's flash budget;
//! BENCHMARKS.md).
//!
//! `compiler_builtins` defines these symbols weak, so the linker takes these: the shim's code
//! calls `memcpy` & co., which pulls this crate's section in (and `--gc-sections` keeps it).
//! `memcpy` copies a word at a time and `memset` two when the addresses are word-aligned, both a
//! byte at a time otherwise; `memcmp` compares bytes. The boot path moves little memory through
//! them: the image bytes go from the flash driver straight into the hash (the boot instruction
//! counts of BENCHMARKS.md are taken with these routines).
//!
//! Thumb-2 only (post-indexed loads and stores, `cbz`, `strd`): ARMv7-M, ARMv7E-M and ARMv8-M
//! Mainline. Not for ARMv6-M (the RP2040's Cortex-M0+, Thumb-1: the crate refuses to build with the
//! feature there) nor ARMv8-M Baseline, which lack these instructions.
//!
//! Written in assembly because a Rust loop here would be recognised by LLVM as a `memcpy` and
//! compiled into a call to itself.

core::arch::global_asm!(
    r#"
    .section .text.twinbank_shim_mem,"ax",%progbits
    .syntax unified
    .thumb

    @ void *memcpy(void *dest r0, const void *src r1, size_t n r2): returns dest.
    .global memcpy
    .type memcpy, %function
    .thumb_func
memcpy:
    mov     ip, r0
    orr     r3, r0, r1
    tst     r3, #3
    bne     2f
1:  cmp     r2, #4
    blo     2f
    ldr     r3, [r1], #4
    str     r3, [ip], #4
    subs    r2, #4
    b       1b
2:  cbz     r2, 3f
    ldrb    r3, [r1], #1
    strb    r3, [ip], #1
    subs    r2, #1
    b       2b
3:  bx      lr
    .size memcpy, . - memcpy

    .global __aeabi_memcpy
    .thumb_set __aeabi_memcpy, memcpy
    .global __aeabi_memcpy4
    .thumb_set __aeabi_memcpy4, memcpy
    .global __aeabi_memcpy8
    .thumb_set __aeabi_memcpy8, memcpy

    @ void __aeabi_memclr(void *dest r0, size_t n r1), and the 4/8-aligned variants.
    .global __aeabi_memclr
    .type __aeabi_memclr, %function
    .thumb_func
__aeabi_memclr:
    mov     r2, r1
    movs    r1, #0
    @ falls through into memset(dest, 0, n)
    .size __aeabi_memclr, . - __aeabi_memclr

    @ void *memset(void *dest r0, int c r1, size_t n r2): returns dest.
    .global memset
    .type memset, %function
    .thumb_func
memset:
    mov     ip, r0
    uxtb    r1, r1
    orr     r1, r1, r1, lsl #8
    orr     r1, r1, r1, lsl #16
    tst     r0, #3
    bne     2f
1:  cmp     r2, #8
    blo     2f
    strd    r1, r1, [ip], #8
    subs    r2, #8
    b       1b
2:  cbz     r2, 3f
    strb    r1, [ip], #1
    subs    r2, #1
    b       2b
3:  bx      lr
    .size memset, . - memset

    .global __aeabi_memclr4
    .thumb_set __aeabi_memclr4, __aeabi_memclr
    .global __aeabi_memclr8
    .thumb_set __aeabi_memclr8, __aeabi_memclr

    @ int memcmp(const void *a r0, const void *b r1, size_t n r2): the difference of the first
    @ differing bytes (as unsigned), 0 when equal.
    .global memcmp
    .type memcmp, %function
    .thumb_func
memcmp:
    mov     ip, r0
1:  cbz     r2, 2f
    ldrb    r0, [ip], #1
    ldrb    r3, [r1], #1
    subs    r0, r0, r3
    bne     3f
    subs    r2, #1
    b       1b
2:  movs    r0, #0
3:  bx      lr
    .size memcmp, . - memcmp

    .global bcmp
    .thumb_set bcmp, memcmp
"#
);
