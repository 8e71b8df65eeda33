//! The geometries of the ports to real MCUs (`ports/<chip>/board.toml`), run by the quick
//! matrix beside the synthetic ones (and by the full matrix with `--geometry W,E`).
//!
//! The harness's world keeps its own small banks (a few sectors: the images of the scenarios)
//! and state region (see [`crate::world::World::new`]); what it takes from a port is the
//! program unit and the erase sector, which decide where a cut can tear a record or an image.
//! A test checks each entry against its board description.

/// One port's flash geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortGeometry {
    /// The port's directory under `ports/`.
    pub port: &'static str,
    /// `[flash] write_size` of its board description.
    pub write_size: usize,
    /// `[flash] erase_size` of its board description.
    pub erase_size: usize,
}

/// nRF52840 (NVMC: 4-byte words, 4 KiB pages), RP2040 (QSPI NOR as 4-byte units over 256-byte
/// pages, 4 KiB sectors), STM32L476 (8-byte double-words with ECC, 2 KiB pages).
pub const PORT_GEOMETRIES: [PortGeometry; 3] = [
    PortGeometry {
        port: "nrf52840",
        write_size: 4,
        erase_size: 4096,
    },
    PortGeometry {
        port: "rp2040",
        write_size: 4,
        erase_size: 4096,
    },
    PortGeometry {
        port: "stm32l476",
        write_size: 8,
        erase_size: 2048,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use twinbank::board::BoardDescription;

    #[test]
    fn port_geometries_are_the_board_descriptions() {
        let ports = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ports");
        for p in PORT_GEOMETRIES {
            let path = ports.join(p.port).join("board.toml");
            let board = BoardDescription::load(&path).expect("port board description");
            assert_eq!(
                (p.write_size, p.erase_size),
                (
                    board.flash.write_size as usize,
                    board.flash.erase_size.map(|e| e as usize).unwrap_or(0)
                ),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn the_quick_matrix_runs_every_port_geometry() {
        let quick = crate::geometries(&crate::Options {
            quick: true,
            ..crate::Options::default()
        });
        for p in PORT_GEOMETRIES {
            assert!(
                quick.contains(&(p.write_size, p.erase_size)),
                "{}: ({}, {}) not in {quick:?}",
                p.port,
                p.write_size,
                p.erase_size
            );
            assert!(
                crate::with_geometry!(p.write_size, p.erase_size, supported()).is_some(),
                "{}: the harness cannot instantiate ({}, {})",
                p.port,
                p.write_size,
                p.erase_size
            );
        }
    }

    fn supported<const W: usize, const E: usize>() {}
}
