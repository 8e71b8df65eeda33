//! Running QEMU (MPS2-AN385) with a persistent flash file.
