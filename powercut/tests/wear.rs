//! Wear: state-region erases per state change stay within one per sector's worth of records.

use twinbank_powercut::wear::wear;

#[test]
fn wear_is_bounded_over_1000_updates_and_1000_trial_boots() {
    let figures = [
        wear::<4, 1024>(1000, 1000).expect("wear run, 1 KiB sectors"),
        wear::<8, 4096>(1000, 1000).expect("wear run, 4 KiB sectors"),
    ];
    for f in &figures {
        println!("{}", f.line());
        // Each update + confirm is 3 state changes (finish, trial boot, confirm); each trial
        // cycle is 1 + attempts + 1 records.
        assert!(f.state_changes >= 3 * 1000 + 1000, "{}", f.line());
        assert!(f.within_bound(), "{}", f.line());
        assert!(
            f.erases_per_change() <= 1.0 / f.slots as f64 + 0.001,
            "{}",
            f.line()
        );
        // Each bank sector is erased once per update into its bank.
        assert!(f.bank_sector_max as u64 <= f.state_changes, "{}", f.line());
    }
}
