//! The harness catches a broken state writer: the same run that passes with the device's state
//! store fails when every record is written "in place" (the sector holding the newest record is
//! erased, then the record is programmed at its start).

use twinbank_powercut::flash::Fault;
use twinbank_powercut::scenario::Sc;
use twinbank_powercut::{in_op_only, render, run, Options};

fn opts(fault: Option<Fault>, before_only: bool) -> Options {
    Options {
        geometries: vec![(4, 1024), (16, 4096)],
        scenarios: Sc::ALL[..9].to_vec(),
        fault,
        before_only,
        depth: Some(1),
        quick: true,
        ..Options::default()
    }
}

#[test]
fn erase_in_place_writer_is_caught() {
    let control = run(&opts(None, false)).expect("control run");
    println!("control (device store): {}", control.summary());
    assert_eq!(control.failures(), 0, "{}", render(&control, None));

    let fault = Some(Fault::EraseInPlace);
    let all = run(&opts(fault, false)).expect("broken writer, all models");
    println!("{}", render(&all, fault));
    println!("broken writer, all cut models: {}", all.summary());
    assert!(all.failures() > 0, "the broken writer must be caught");

    let between = run(&opts(fault, true)).expect("broken writer, model (a)");
    println!("broken writer, model (a) only: {}", between.summary());
    let only = in_op_only(&all, &between);
    println!(
        "failure-revealing first-level cut points: {} with all models, {} with (a) only, {} only with in-operation models",
        all.failing_first_ops(),
        between.failing_first_ops(),
        only
    );
    // Cutting inside the erase of the record's sector is a failure that no cut between
    // operations shows (before the erase, the old record is intact).
    assert!(only > 0);
}
