//! The async updater (`twinbank::asynch`, feature `async`): it really awaits its flash (every
//! operation is a point where the executor runs other tasks), it leaves exactly the flash the
//! blocking updater leaves, and it checks the driver's geometry like the blocking one.
//! The lifecycle, refusal and resume tests run through both updaters (`for_drivers!`).

mod common;
use common::*;
use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};
use twinbank::state::StateError;
use twinbank::testing::StrictFlash;
use twinbank::{asynch, Bank, BankState, GeometryError, Layout, Region, UpdateError};

/// Polls `f` to completion by hand; returns its output and how many polls returned `Pending`.
fn poll_counting<T>(f: impl Future<Output = T>) -> (T, u64) {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    let mut pending = 0;
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(t) => return (t, pending),
            Poll::Pending => pending += 1,
        }
    }
}

/// Flash operations the strict flash counted (each erase call of the updater is one sector).
fn operations<const W: usize, const E: usize>(f: &StrictFlash<W, E>) -> u64 {
    f.counters.reads + f.counters.writes + f.counters.erases
}

/// Every flash operation of every step is awaited: the future is pending once per operation
/// (the `Yielding` flash is pending once before each), and not one operation runs without it.
/// An updater that blocked on its flash (or ran a blocking copy inside the future) would return
/// `Ready` at its first poll.
fn every_flash_operation_is_awaited<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let img = rig.image(Bank::B, v(2), 2, 2);
    let m = manifest(&img);
    let config = rig.config();
    let before = operations(&rig.flash);
    let (up, polls) = poll_counting(asynch::Updater::new(
        Yielding::new(&mut rig.flash),
        config,
        Bank::A,
    ));
    let mut up = up.expect("updater");
    assert!(polls > 0, "opening scans the state region: it must await");
    let mut yields = up.flash_mut().yields;
    assert_eq!(polls, yields, "one pending poll per flash operation");

    let mut step = |name: &str, polls: u64, up: &mut common::AsyncUpdater<'_, W, E>| {
        let now = up.flash_mut().yields;
        assert!(polls > 0, "{name} did not await its flash");
        assert_eq!(
            polls,
            now - yields,
            "{name}: one pending poll per flash operation"
        );
        yields = now;
    };
    let (r, polls) = poll_counting(up.begin(&m));
    assert_eq!(r, Ok(0));
    step("begin", polls, &mut up);
    let (r, polls) = poll_counting(up.write(0, &img));
    assert_eq!(r, Ok(img.len() as u32));
    step("write", polls, &mut up);
    let (r, polls) = poll_counting(up.finish());
    let id = r.expect("finish");
    step("finish", polls, &mut up);
    assert_eq!(
        operations(&rig.flash) - before,
        yields,
        "no flash operation ran without being awaited"
    );
    assert_eq!(
        *rig.state().bank(Bank::B),
        BankState::Pending {
            image: id,
            attempts_left: 3
        }
    );

    // The trial boot, then confirm through the async updater.
    assert_eq!(rig.boot().unwrap().bank, Bank::B);
    let config = rig.config();
    let mut up = block_on(asynch::Updater::new(
        Yielding::new(&mut rig.flash),
        config,
        Bank::B,
    ))
    .unwrap();
    let (r, polls) = poll_counting(up.confirm());
    assert_eq!(r, Ok(()));
    assert!(polls > 0, "confirm writes a record: it must await");
    assert_eq!(*rig.state().bank(Bank::B), BankState::Confirmed(id));
}

/// The same install through both updaters leaves byte-identical flash after the same number of
/// reads, writes and erases: one implementation, two ways to run it.
fn same_flash_as_blocking<const W: usize, const E: usize>() {
    let mut blocking = Rig::<W, E>::new();
    let mut asynchronous = Rig::<W, E>::new();
    let v1 = blocking.image(Bank::A, v(1), 1, 1);
    let v2 = blocking.image(Bank::B, v(2), 2, 2);
    blocking.provision(&v1);
    asynchronous.provision(&v1);
    blocking.install(Bank::A, &v2).expect("blocking install");
    with_async_install(&mut asynchronous, &v2);
    assert_eq!(blocking.flash.bytes(), asynchronous.flash.bytes());
    let c = |r: &Rig<W, E>| {
        (
            r.flash.counters.reads,
            r.flash.counters.writes,
            r.flash.counters.erases,
        )
    };
    assert_eq!(c(&blocking), c(&asynchronous));
    assert!(asynchronous.flash.counters.writes > 0);
}

fn with_async_install<const W: usize, const E: usize>(rig: &mut Rig<W, E>, image: &[u8]) {
    let config = rig.config();
    let mut up = block_on(asynch::Updater::new(
        Yielding::new(&mut rig.flash),
        config,
        Bank::A,
    ))
    .unwrap();
    let sizes = [1usize, 7, 64, 333, 1000, 2];
    let mut offset = block_on(up.begin(&manifest(image))).unwrap() as usize;
    let mut i = 0;
    while offset < image.len() {
        let n = sizes[i % sizes.len()].min(image.len() - offset);
        offset = block_on(up.write(offset as u32, &image[offset..offset + n])).unwrap() as usize;
        i += 1;
    }
    block_on(up.finish()).expect("async install");
}

/// An embassy caller may drop a future at any await point (`select` with a timeout). Dropped
/// while the flash programs (the driver started the operation and awaits its end), `write`
/// leaves no upload, as a failed program does: the next `write` is refused and `begin` resumes,
/// and no unit is programmed twice (the strict flash panics on that).
fn dropped_write_resumes<const W: usize, const E: usize>() {
    let mut rig = Rig::<W, E>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let img = rig.image(Bank::B, v(2), 2, 2);
    let m = manifest(&img);
    let config = rig.config();
    let mut up = block_on(asynch::Updater::new(
        Yielding::after(&mut rig.flash),
        config,
        Bank::A,
    ))
    .unwrap();
    assert_eq!(block_on(up.begin(&m)), Ok(0));
    // Whole write units of the header: the first await of `write` is their program.
    let n = 3 * W.max(16);
    let writes = up.flash_mut().inner.counters.writes;
    {
        let mut f = pin!(up.write(0, &img[..n]));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(f.as_mut().poll(&mut cx).is_pending());
    } // dropped: the program ran, the updater never saw it end
    assert!(
        up.flash_mut().inner.counters.writes > writes,
        "the program ran"
    );
    assert_eq!(up.next_offset(), None);
    assert_eq!(block_on(up.write(0, &img[..n])), Err(UpdateError::NoUpload));
    // `begin` resumes: from the start of the sector the dropped write reached (erased again).
    assert_eq!(block_on(up.begin(&m)), Ok(0));
    let mut off = 0usize;
    while off < img.len() {
        let k = 777.min(img.len() - off);
        off = block_on(up.write(off as u32, &img[off..off + k])).unwrap() as usize;
    }
    block_on(up.finish()).expect("finish");
    assert_eq!(rig.boot().unwrap().bank, Bank::B);
}

for_geometries! {
    awaits => every_flash_operation_is_awaited;
    same_flash => same_flash_as_blocking;
    dropped_write => dropped_write_resumes;
}

/// A layout written for another erase size is refused by the async updater as by the blocking
/// one, before anything is read.
#[test]
fn async_geometry_is_checked() {
    let rig = Rig::<8, 4096>::new();
    let l = rig.layout;
    let wrong = Layout::new(
        l.flash_size(),
        8,
        1024,
        l.base_address(),
        Region::new(l.state().offset.0, l.state().size.0),
        Region::new(l.bank(Bank::A).offset.0, l.bank(Bank::A).size.0),
        Region::new(l.bank(Bank::B).offset.0, l.bank(Bank::B).size.0),
    )
    .expect("a valid layout for 1 KiB sectors");
    let mut config = rig.config();
    config.layout = wrong;
    let mut flash = StrictFlash::<8, 4096>::new(l.flash_size() as usize);
    let r = block_on(asynch::Updater::new(
        Yielding::new(&mut flash),
        config,
        Bank::A,
    ));
    assert_eq!(
        r.err(),
        Some(UpdateError::State(StateError::Geometry(
            GeometryError::EraseSize {
                layout: 1024,
                driver: 4096
            }
        )))
    );
    assert_eq!(operations(&flash), 0, "nothing read");
}

/// What an embassy task holding the updater's futures needs (printed with `--nocapture`; host
/// sizes, 64-bit pointers): the buffers that live across an `.await` are in the future (the
/// 256-byte hashing buffer, a state record), so each is bounded by a few hundred bytes plus the
/// updater's own.
#[test]
fn future_sizes() {
    let mut rig = Rig::<8, 4096>::new();
    rig.provision(&rig.image(Bank::A, v(1), 1, 1));
    let img = rig.image(Bank::B, v(2), 2, 2);
    let m = manifest(&img);
    let config = rig.config();
    let open = asynch::Updater::new(Yielding::new(&mut rig.flash), config, Bank::A);
    let open_size = core::mem::size_of_val(&open);
    let mut up = block_on(open).unwrap();
    fn size<T>(f: impl Future<Output = T>) -> usize {
        core::mem::size_of_val(&f)
    }
    let sizes = [
        ("Updater::new", open_size),
        ("begin", size(up.begin(&m))),
        ("write", size(up.write(0, &img))),
        ("finish", size(up.finish())),
        ("confirm", size(up.confirm())),
        ("rollback", size(up.rollback())),
    ];
    let updater = core::mem::size_of_val(&up);
    println!("async updater: {updater} B");
    for (name, size) in sizes {
        println!("future of {name}: {size} B");
        assert!(size < 2048, "{name}: {size} B");
    }
}
