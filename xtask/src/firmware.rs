//! Building the firmware (shim and demo app) for thumbv7m-none-eabi.
