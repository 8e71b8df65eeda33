//! Flash operation counts per install, per confirm and per boot (printed with --nocapture; the
//! bounds asserted here are the ones docs/design.md states).

mod common;
use common::*;
use twinbank::Bank;

#[test]
fn flash_operations_per_step() {
    let mut rig = Rig::<4, 4096>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let img = rig.image(Bank::B, v(2), 1, 2);
    let sectors = img.len().div_ceil(4096) as u64;

    rig.flash.reset_counters();
    let m = manifest(&img);
    {
        let mut up = rig.updater(Bank::A);
        up.begin(&m).unwrap();
        // Chunks of 256 bytes, as a transport would deliver them.
        for (i, chunk) in img.chunks(256).enumerate() {
            up.write((i * 256) as u32, chunk).unwrap();
        }
        up.finish().unwrap();
    }
    let c = rig.flash.counters.clone();
    println!(
        "install of {} bytes: {} erases, {} writes ({} bytes programmed), {} reads",
        img.len(),
        c.erases,
        c.writes,
        c.bytes_written,
        c.reads
    );
    // Bank sectors + at most one state sector; one write per chunk + one activation record.
    assert!(c.erases <= sectors + 1);
    assert!(c.writes <= img.len().div_ceil(256) as u64 + 2);
    assert!(c.bytes_written <= img.len() as u64 + 4 + 128);

    rig.flash.reset_counters();
    rig.boot().unwrap();
    let c = rig.flash.counters.clone();
    println!(
        "trial boot: {} erases, {} writes, {} reads",
        c.erases, c.writes, c.reads
    );
    assert_eq!(
        (c.erases, c.writes),
        (0, 1),
        "a trial boot writes one record"
    );

    rig.flash.reset_counters();
    rig.updater(Bank::B).confirm().unwrap();
    let c = rig.flash.counters.clone();
    println!(
        "confirm: {} erases, {} writes, {} reads",
        c.erases, c.writes, c.reads
    );
    assert_eq!((c.erases, c.writes), (0, 1), "a confirm writes one record");

    rig.flash.reset_counters();
    rig.boot().unwrap();
    let c = rig.flash.counters.clone();
    println!(
        "normal boot: {} erases, {} writes, {} reads",
        c.erases, c.writes, c.reads
    );
    assert_eq!((c.erases, c.writes), (0, 0), "a normal boot writes nothing");
    println!("state record: {} bytes", twinbank::state::RECORD_SIZE);
}
