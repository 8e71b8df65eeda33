//! The reduced matrix (`--quick`) in the test suite.

use twinbank_powercut::scenario::Sc;
use twinbank_powercut::{render, run, Options};

fn quick(scenarios: &[Sc]) {
    let opts = Options {
        quick: true,
        scenarios: scenarios.to_vec(),
        ..Options::default()
    };
    let report = run(&opts).expect("matrix");
    println!("{}", render(&report, None));
    println!("{}", report.summary());
    assert!(
        report.points() > 1000,
        "the quick matrix cuts enough points"
    );
    assert_eq!(report.failures(), 0, "{}", report.summary());
}

/// Scenarios 1–9 of issue 3.
#[test]
fn quick_matrix_issue_scenarios() {
    quick(&Sc::ALL[..9]);
}

/// Scenarios 10 and 11: updater edge cases (an image with a run of 0xff bytes across a sector
/// boundary; a rebuild with the same header as the image still in the bank); and 12, a delta
/// install (issue 14).
#[test]
fn quick_matrix_updater_edge_cases_and_delta() {
    quick(&[Sc::PaddedInstall, Sc::Rebuild, Sc::DeltaInstall]);
}

/// Scenarios 12 and 13: a streamed (SMP) upload, and the activation of the uploaded image.
#[test]
fn quick_matrix_streamed_upload_and_activation() {
    quick(&[Sc::StreamedInstall, Sc::Activate]);
}

/// Scenarios 15–19 (issue 10): serial recovery uploads (a blank device, the running image
/// kept, a rotted fallback), cancel of an activated update, the last-resort boot.
#[test]
fn quick_matrix_recovery_cancel_last_resort() {
    quick(&[
        Sc::RecoveryBlank,
        Sc::RecoveryInstall,
        Sc::RecoveryOverCorrupted,
        Sc::Cancel,
        Sc::LastResort,
    ]);
}
