//! SMP (MCUmgr) on the device, host side: packets built and read with an independent CBOR
//! implementation (ciborium), through `Smp::respond` and through the UART demultiplexer
//! (`Console::feed`) with the console framing.

mod common;
use ciborium::Value;
use common::*;
use twinbank::protocol::message::{Request, Response};
use twinbank::protocol::{decode_frame, encode_frame, Envelope, Server, MAX_FRAME};
use twinbank::smp::framing::{self, MAX_ENCODED, MAX_PACKET};
use twinbank::smp::{Console, Smp, CONSOLE_OUT};
use twinbank::state::ReceivingKind;
use twinbank::testing::{SplitMix64, StrictFlash};
use twinbank::{Bank, BankState, Updater, Version};

const READ: u8 = 0;
const WRITE: u8 = 2;
const V1: u8 = 0;
const V2: u8 = 1;

fn map(entries: &[(&str, Value)]) -> Value {
    Value::Map(
        entries
            .iter()
            .map(|(k, v)| (Value::Text((*k).into()), v.clone()))
            .collect(),
    )
}

fn int(n: u64) -> Value {
    Value::Integer(n.into())
}

fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

fn get<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    v.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn num(v: &Value, key: &str) -> Option<i128> {
    get(v, key)?.as_integer().map(i128::from)
}

fn boolean(v: &Value, key: &str) -> bool {
    get(v, key).and_then(Value::as_bool).unwrap_or(false)
}

/// An SMP request packet.
fn packet(version: u8, op: u8, group: u16, seq: u8, cmd: u8, body: &Value) -> Vec<u8> {
    let mut b = Vec::new();
    ciborium::into_writer(body, &mut b).unwrap();
    let mut p = vec![(version << 3) | op, 0];
    p.extend_from_slice(&(b.len() as u16).to_be_bytes());
    p.extend_from_slice(&group.to_be_bytes());
    p.extend_from_slice(&[seq, cmd]);
    p.extend_from_slice(&b);
    p
}

/// A response: (header bytes, body).
fn parse(resp: &[u8]) -> ([u8; 8], Value) {
    let head: [u8; 8] = resp[..8].try_into().unwrap();
    assert_eq!(
        u16::from_be_bytes([head[2], head[3]]) as usize,
        resp.len() - 8,
        "length field"
    );
    (head, ciborium::from_reader(&resp[8..]).unwrap())
}

/// A device running bank A (factory v1), served over SMP at the packet level. The updater lives
/// as long as the application would (its RAM holds the upload in progress).
struct Dev<const W: usize, const E: usize> {
    rig: Rig<W, E>,
    up: Option<Updater<'static, StrictFlash<W, E>>>,
    smp: Smp,
    seq: u8,
    v1: Vec<u8>,
}

impl<const W: usize, const E: usize> Dev<W, E> {
    fn new() -> Self {
        let mut rig = Rig::<W, E>::new();
        let v1 = rig.image(Bank::A, v(1), 1, 1);
        rig.provision(&v1);
        let flash = std::mem::replace(&mut rig.flash, StrictFlash::new(0));
        let up = Updater::new(flash, rig.config(), Bank::A).unwrap();
        Dev {
            rig,
            up: Some(up),
            smp: Smp::new(),
            seq: 0,
            v1,
        }
    }

    fn up(&mut self) -> &mut Updater<'static, StrictFlash<W, E>> {
        self.up.as_mut().unwrap()
    }

    fn flash(&mut self) -> &mut StrictFlash<W, E> {
        self.up().flash_mut()
    }

    fn state(&mut self) -> twinbank::BootState {
        let layout = self.rig.layout;
        *twinbank::state::StateStore::open(self.flash(), &layout)
            .unwrap()
            .current()
            .unwrap()
    }

    fn region(&mut self, r: twinbank::Region) -> Vec<u8> {
        self.flash().bytes()[r.offset.0 as usize..(r.offset.0 + r.size.0) as usize].to_vec()
    }

    fn state_bytes(&mut self) -> Vec<u8> {
        let r = self.rig.layout.state();
        self.region(r)
    }

    fn bank_bytes(&mut self, bank: Bank) -> Vec<u8> {
        let r = self.rig.layout.bank(bank);
        self.region(r)
    }

    /// A reset: the boot decision, then the application of the bank booted starts afresh (the
    /// SMP server and the updater lose their RAM).
    fn boot(&mut self) -> Bank {
        let config = self.rig.config();
        let mut flash = self.up.take().unwrap().into_flash();
        let d = twinbank::boot::decide(&mut flash, &config).unwrap();
        self.up = Some(Updater::new(flash, config, d.bank).unwrap());
        self.smp = Smp::new();
        d.bank
    }

    /// Sends a request (v2); returns the response body.
    fn call(&mut self, op: u8, group: u16, cmd: u8, body: &Value) -> Value {
        self.call_v(V2, op, group, cmd, body)
    }

    fn call_v(&mut self, version: u8, op: u8, group: u16, cmd: u8, body: &Value) -> Value {
        self.seq = self.seq.wrapping_add(1);
        let req = packet(version, op, group, self.seq, cmd, body);
        let mut out = vec![0u8; MAX_PACKET];
        let up = self.up.as_mut().unwrap();
        let n = self.smp.respond(up, &req, &mut out);
        assert!(n >= 8, "no response");
        let (head, body) = parse(&out[..n]);
        assert_eq!(head[0], (version.min(1) << 3) | (op + 1), "op and version");
        assert_eq!(
            (&head[4..6], head[6], head[7]),
            (&group.to_be_bytes()[..], self.seq, cmd)
        );
        body
    }

    fn state_read(&mut self) -> Vec<Value> {
        let r = self.call(READ, 1, 0, &map(&[]));
        get(&r, "images").unwrap().as_array().unwrap().clone()
    }

    /// Uploads `image` in chunks of `chunk` bytes from `from`; returns every answer.
    fn upload(&mut self, image: &[u8], chunk: usize) -> Vec<Value> {
        let sha: [u8; 32] = sha256(image);
        let mut answers = Vec::new();
        let mut off = 0usize;
        loop {
            let end = (off + chunk).min(image.len());
            let body = if off == 0 {
                map(&[
                    ("image", int(0)),
                    ("len", int(image.len() as u64)),
                    ("off", int(0)),
                    ("sha", bytes(&sha)),
                    ("data", bytes(&image[..end])),
                    ("upgrade", Value::Bool(false)),
                ])
            } else {
                map(&[("off", int(off as u64)), ("data", bytes(&image[off..end]))])
            };
            let r = self.call(WRITE, 1, 1, &body);
            answers.push(r.clone());
            let Some(next) = num(&r, "off") else { break };
            off = next as usize;
            if off >= image.len() {
                break;
            }
        }
        answers
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(b).into()
}

/// v2 group error (group, rc), if the body is one.
fn err(v: &Value) -> Option<(i128, i128)> {
    let e = get(v, "err")?;
    Some((num(e, "group")?, num(e, "rc")?))
}

#[test]
fn os_group_echo_parameters_bootloader_reset() {
    let mut d = Dev::<4, 4096>::new();
    for op in [READ, WRITE] {
        let r = d.call(
            op,
            0,
            0,
            &map(&[("d", Value::Text("hello twinbank".into()))]),
        );
        assert_eq!(
            get(&r, "r").and_then(Value::as_text),
            Some("hello twinbank")
        );
    }
    let r = d.call(READ, 0, 6, &map(&[]));
    assert_eq!(
        (num(&r, "buf_size"), num(&r, "buf_count")),
        (Some(1024), Some(1))
    );
    let r = d.call(READ, 0, 8, &map(&[]));
    assert_eq!(r, map(&[("bootloader", Value::Text("twinbank".into()))]));
    let r = d.call(READ, 0, 8, &map(&[("query", Value::Text("mode".into()))]));
    assert_eq!(
        (num(&r, "mode"), boolean(&r, "no-downgrade")),
        (Some(5), true)
    );
    let r = d.call(READ, 0, 8, &map(&[("query", Value::Text("colour".into()))]));
    assert_eq!(err(&r), Some((0, 3)));
    // Unknown command, unknown group: ENOTSUP (8) as a plain rc in both versions.
    assert_eq!(num(&d.call(READ, 0, 42, &map(&[])), "rc"), Some(8));
    assert_eq!(num(&d.call(READ, 9, 0, &map(&[])), "rc"), Some(8));
    let r = d.call_v(V1, READ, 9, 0, &map(&[]));
    assert_eq!(num(&r, "rc"), Some(8));
    assert!(get(&r, "rsn").is_some());
    // A version the device does not speak.
    assert_eq!(num(&d.call_v(2, READ, 0, 6, &map(&[])), "rc"), Some(13));
    // Echo with a body that is not a map.
    assert_eq!(num(&d.call(WRITE, 0, 0, &int(5)), "rc"), Some(3));
    // Reset: refused into another boot mode, answered (then requested) otherwise.
    assert_eq!(
        num(&d.call(WRITE, 0, 5, &map(&[("boot_mode", int(1))])), "rc"),
        Some(8)
    );
    assert!(!d.smp.reset_requested());
    assert_eq!(d.call(WRITE, 0, 5, &map(&[])), map(&[]));
    assert!(d.smp.reset_requested());
    assert!(!d.smp.recovery_requested());
}

#[test]
fn reset_into_recovery_only_where_the_bootloader_offers_it() {
    let mut d = Dev::<4, 4096>::new();
    let recovery = map(&[("boot_mode", int(1))]);
    // Not offered (the default): ENOTSUP, nothing resets.
    assert_eq!(num(&d.call(WRITE, 0, 5, &recovery), "rc"), Some(8));
    assert!(!d.smp.reset_requested() && !d.smp.recovery_requested());
    d.smp.offer_recovery(true);
    // Modes other than 0 and 1 stay refused.
    assert_eq!(
        num(&d.call(WRITE, 0, 5, &map(&[("boot_mode", int(7))])), "rc"),
        Some(8)
    );
    assert!(!d.smp.reset_requested());
    // Offered: answered, then a reset into recovery is requested.
    assert_eq!(d.call(WRITE, 0, 5, &recovery), map(&[]));
    assert!(d.smp.reset_requested() && d.smp.recovery_requested());
}

#[test]
fn state_read_of_a_provisioned_device() {
    let mut d = Dev::<4, 4096>::new();
    let id = manifest(&d.v1.clone()).image_id();
    let images = d.state_read();
    assert_eq!(images.len(), 1, "{images:?}");
    let e = &images[0];
    assert_eq!((num(e, "image"), num(e, "slot")), (Some(0), Some(0)));
    assert_eq!(get(e, "version").and_then(Value::as_text), Some("1.0.0"));
    assert_eq!(
        get(e, "hash").and_then(Value::as_bytes),
        Some(&id.digest.to_vec())
    );
    assert!(boolean(e, "bootable") && boolean(e, "confirmed") && boolean(e, "active"));
    assert!(!boolean(e, "pending") && !boolean(e, "permanent"));
    // Exactly the keys the clients' schemas allow.
    let keys: Vec<&str> = e
        .as_map()
        .unwrap()
        .iter()
        .filter_map(|(k, _)| k.as_text())
        .collect();
    assert_eq!(
        keys,
        [
            "image",
            "slot",
            "version",
            "hash",
            "bootable",
            "pending",
            "confirmed",
            "active",
            "permanent"
        ]
    );
    let r = d.call(READ, 1, 6, &map(&[]));
    let img = &get(&r, "images").unwrap().as_array().unwrap()[0];
    assert_eq!(
        num(img, "max_image_size"),
        Some(d.rig.layout.bank_size() as i128)
    );
}

fn whole_update<const W: usize, const E: usize>() {
    let mut d = Dev::<W, E>::new();
    let v2 = d.rig.image(Bank::B, Version::new(2, 1, 3, 4), 2, 2);
    let id2 = manifest(&v2).image_id();
    let answers = d.upload(&v2, 400);
    let last = answers.last().unwrap();
    assert_eq!(num(last, "off"), Some(v2.len() as i128), "{answers:?}");
    assert!(boolean(last, "match"));
    // Uploaded and verified, not active: the running image stays preferred.
    let s = d.state();
    assert_eq!(s.preferred, Bank::A);
    assert!(matches!(s.bank(Bank::B), BankState::Receiving(r)
        if r.kind == ReceivingKind::Verified && r.image == id2));
    let images = d.state_read();
    let e = &images[1];
    assert_eq!(num(e, "slot"), Some(1));
    assert_eq!(get(e, "version").and_then(Value::as_text), Some("2.1.3.4"));
    assert!(boolean(e, "bootable") && !boolean(e, "pending") && !boolean(e, "confirmed"));
    // A reset now changes nothing.
    assert_eq!(d.boot(), Bank::A);
    // Test: pending, preferred.
    let r = d.call(
        WRITE,
        1,
        0,
        &map(&[
            ("hash", bytes(&id2.digest)),
            ("confirm", Value::Bool(false)),
        ]),
    );
    let e = &get(&r, "images").unwrap().as_array().unwrap()[1];
    assert!(boolean(e, "pending") && !boolean(e, "permanent") && !boolean(e, "active"));
    assert!(matches!(d.state().bank(Bank::B), BankState::Pending { .. }));
    // Testing it again is a no-op.
    let before = d.state_bytes();
    d.call(WRITE, 1, 0, &map(&[("hash", bytes(&id2.digest))]));
    assert_eq!(d.state_bytes(), before);
    // Reset: trial boot of B.
    assert_eq!(d.boot(), Bank::B);
    let images = d.state_read();
    assert!(boolean(&images[1], "active") && !boolean(&images[1], "confirmed"));
    assert!(boolean(&images[0], "confirmed") && !boolean(&images[0], "active"));
    // Confirm by the client (no hash: the running image).
    d.call(WRITE, 1, 0, &map(&[("confirm", Value::Bool(true))]));
    let s = d.state();
    assert_eq!(s.bank(Bank::B), &BankState::Confirmed(id2));
    assert_eq!(s.min_security_counter, 2);
    assert!(boolean(&d.state_read()[1], "confirmed"));
}

for_geometries! {
    whole_update_by_smp => whole_update;
}

#[test]
fn refusals_change_nothing() {
    let mut d = Dev::<8, 4096>::new();
    let state = d.state_bytes();
    let bank_b = d.bank_bytes(Bank::B);
    let wrong_bank = d.rig.image(Bank::A, v(2), 2, 2);
    let mut not_image = d.rig.image(Bank::B, v(2), 2, 2);
    not_image[0] ^= 1;
    let mut too_large = d.rig.image(Bank::B, v(2), 2, 2);
    let len = d.rig.layout.bank_size() as usize + 1;
    too_large.resize(len, 0xaa);
    let older = d.rig.image(Bank::B, Version::new(0, 9, 0, 0), 1, 2);
    let checks: [(&[u8], bool, (i128, i128)); 4] = [
        (&wrong_bank, false, (1, 25)),
        (&not_image, false, (1, 23)),
        (&too_large, false, (1, 30)),
        (&older, true, (1, 27)),
    ];
    for (img, upgrade, want) in checks {
        let body = map(&[
            ("len", int(img.len() as u64)),
            ("off", int(0)),
            ("sha", bytes(&sha256(img))),
            ("data", bytes(&img[..300])),
            ("upgrade", Value::Bool(upgrade)),
        ]);
        let r = d.call(WRITE, 1, 1, &body);
        assert_eq!(err(&r), Some(want), "{r:?}");
        // The same in SMP v1: an rc and the reason in words.
        let r = d.call_v(V1, WRITE, 1, 1, &body);
        assert!(num(&r, "rc").is_some() && get(&r, "rsn").is_some(), "{r:?}");
    }
    // No sha; a first chunk shorter than a header; an image number past 2.
    let v2 = d.rig.image(Bank::B, v(2), 2, 2);
    let r = d.call(
        WRITE,
        1,
        1,
        &map(&[
            ("len", int(v2.len() as u64)),
            ("off", int(0)),
            ("data", bytes(&v2[..100])),
        ]),
    );
    assert_eq!(err(&r), Some((1, 24)));
    let r = d.call(
        WRITE,
        1,
        1,
        &map(&[
            ("len", int(v2.len() as u64)),
            ("off", int(0)),
            ("sha", bytes(&sha256(&v2))),
            ("data", bytes(&v2[..20])),
        ]),
    );
    assert_eq!(err(&r), Some((1, 22)));
    let r = d.call(
        WRITE,
        1,
        1,
        &map(&[
            ("image", int(3)),
            ("len", int(v2.len() as u64)),
            ("off", int(0)),
            ("sha", bytes(&sha256(&v2))),
            ("data", bytes(&v2[..100])),
        ]),
    );
    assert_eq!(err(&r), Some((1, 14)));
    // State writes: hash of nothing, test of the running image, rollback without fallback, a
    // malformed hash, erase of the running bank.
    let running = manifest(&d.v1.clone()).image_id().digest;
    for (body, want) in [
        (map(&[("hash", bytes(&[9; 32]))]), (1, 3)),
        (map(&[("hash", bytes(&running))]), (1, 33)),
        (
            map(&[("hash", bytes(&[9; 31])), ("confirm", Value::Bool(true))]),
            (1, 24),
        ),
    ] {
        assert_eq!(err(&d.call(WRITE, 1, 0, &body)), Some(want));
    }
    assert_eq!(
        err(&d.call(WRITE, 1, 5, &map(&[("slot", int(0))]))),
        Some((1, 14))
    );
    assert_eq!(d.state_bytes(), state, "a refusal wrote a record");
    assert_eq!(d.bank_bytes(Bank::B), bank_b, "a refusal touched bank B");
}

#[test]
fn checks_only_the_end_can_make_are_made_at_the_end() {
    // An untrusted key and a downgrade are only visible in the TLVs: refused when the last byte
    // arrived, the bank recorded empty, the running image still preferred and confirmed.
    let mut d = Dev::<4, 4096>::new();
    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let wrong_key = d
        .rig
        .builder(Bank::B, v(2), 2)
        .sign(&payload(3), &other)
        .unwrap();
    let downgrade = d.rig.image(Bank::B, v(2), 0, 3);
    for (img, want) in [(&wrong_key, 11), (&downgrade, 27)] {
        let answers = d.upload(img, 500);
        let last = answers.last().unwrap();
        let got = err(last).map(|e| e.1).or(num(last, "rc"));
        assert_eq!(got, Some(want), "{answers:?}");
        let s = d.state();
        assert_eq!((s.preferred, *s.bank(Bank::B)), (Bank::A, BankState::Empty));
        assert!(matches!(s.bank(Bank::A), BankState::Confirmed(_)));
    }
}

#[test]
fn uploads_resume_by_len_and_sha_only() {
    let mut d = Dev::<4, 1024>::new();
    let v2 = d.rig.image(Bank::B, v(2), 2, 2);
    let sha = sha256(&v2);
    let first = |n: usize| {
        map(&[
            ("len", int(v2.len() as u64)),
            ("off", int(0)),
            ("sha", bytes(&sha)),
            ("data", bytes(&v2[..n])),
        ])
    };
    let r = d.call(WRITE, 1, 1, &first(300));
    assert_eq!(num(&r, "off"), Some(300));
    let mut off = 300;
    while off < 3000 {
        let r = d.call(
            WRITE,
            1,
            1,
            &map(&[
                ("off", int(off)),
                ("data", bytes(&v2[off as usize..off as usize + 250])),
            ]),
        );
        off = num(&r, "off").unwrap() as u64;
    }
    // Out of order: answered with the offset expected, nothing written.
    let r = d.call(
        WRITE,
        1,
        1,
        &map(&[("off", int(off + 10)), ("data", bytes(&[1, 2]))]),
    );
    assert_eq!(num(&r, "off"), Some(off as i128));
    // The first chunk again (client restarted): the same session answers where it is.
    assert_eq!(
        num(&d.call(WRITE, 1, 1, &first(300)), "off"),
        Some(off as i128)
    );
    // Power cut: a new server and updater. A chunk finds nothing in progress: offset 0.
    assert_eq!(d.boot(), Bank::A);
    let r = d.call(
        WRITE,
        1,
        1,
        &map(&[
            ("off", int(off)),
            ("data", bytes(&v2[off as usize..off as usize + 10])),
        ]),
    );
    assert_eq!(num(&r, "off"), Some(0));
    // The first chunk resumes at the start of the sector the upload got to.
    let r = d.call(WRITE, 1, 1, &first(300));
    let resumed = num(&r, "off").unwrap() as usize;
    assert!(
        resumed > 300 && resumed <= off as usize && resumed.is_multiple_of(1024),
        "{resumed}"
    );
    let mut off = resumed;
    while off < v2.len() {
        let end = (off + 600).min(v2.len());
        let r = d.call(
            WRITE,
            1,
            1,
            &map(&[("off", int(off as u64)), ("data", bytes(&v2[off..end]))]),
        );
        off = num(&r, "off").unwrap() as usize;
        if off == v2.len() {
            assert!(boolean(&r, "match"));
        }
    }
    assert!(
        matches!(d.state().bank(Bank::B), BankState::Receiving(r) if r.kind == ReceivingKind::Verified)
    );
    // The last chunk again (its answer was lost): complete, nothing written.
    let state = d.state_bytes();
    let r = d.call(
        WRITE,
        1,
        1,
        &map(&[
            ("off", int(v2.len() as u64 - 5)),
            ("data", bytes(&v2[v2.len() - 5..])),
        ]),
    );
    assert_eq!(
        (num(&r, "off"), boolean(&r, "match")),
        (Some(v2.len() as i128), true)
    );
    assert_eq!(d.state_bytes(), state);
}

#[test]
fn native_and_streamed_uploads_never_resume_each_other() {
    let mut d = Dev::<4, 1024>::new();
    let v2 = d.rig.image(Bank::B, v(2), 2, 2);
    // Half a streamed upload.
    let r = d.call(
        WRITE,
        1,
        1,
        &map(&[
            ("len", int(v2.len() as u64)),
            ("off", int(0)),
            ("sha", bytes(&sha256(&v2))),
            ("data", bytes(&v2[..3000])),
        ]),
    );
    assert_eq!(num(&r, "off"), Some(3000));
    // A native begin of the same image starts afresh.
    assert_eq!(d.boot(), Bank::A);
    {
        let up = d.up();
        assert_eq!(up.begin(&manifest(&v2)).unwrap(), 0);
        let mut off = 0;
        while off < 3000 {
            off = up
                .write(off, &v2[off as usize..off as usize + 500])
                .unwrap();
        }
    }
    // A streamed start over a native upload of the same image starts afresh too.
    assert_eq!(d.boot(), Bank::A);
    let r = d.call(
        WRITE,
        1,
        1,
        &map(&[
            ("len", int(v2.len() as u64)),
            ("off", int(0)),
            ("sha", bytes(&sha256(&v2))),
            ("data", bytes(&v2[..200])),
        ]),
    );
    assert_eq!(num(&r, "off"), Some(200));
}

#[test]
fn forced_rollback_and_erase() {
    let mut d = Dev::<4, 4096>::new();
    // v2 with v1's counter, confirmed: v1 stays an accepted fallback.
    let v2 = d.rig.image(Bank::B, v(2), 1, 2);
    let up = d.up();
    let mut off = up.begin(&manifest(&v2)).unwrap();
    while (off as usize) < v2.len() {
        let end = (off as usize + 700).min(v2.len());
        off = up.write(off, &v2[off as usize..end]).unwrap();
    }
    up.finish().unwrap();
    assert_eq!(d.boot(), Bank::B);
    d.call(WRITE, 1, 0, &map(&[("confirm", Value::Bool(true))]));
    let v1 = manifest(&d.v1.clone()).image_id();
    // Switch to the other confirmed bank: permanent + pending.
    let r = d.call(
        WRITE,
        1,
        0,
        &map(&[("hash", bytes(&v1.digest)), ("confirm", Value::Bool(true))]),
    );
    let e = &get(&r, "images").unwrap().as_array().unwrap()[0];
    assert!(boolean(e, "pending") && boolean(e, "permanent"));
    assert_eq!(d.boot(), Bank::A);
    // Erase the other bank: it is recorded empty and erased.
    assert_eq!(d.call(WRITE, 1, 5, &map(&[])), map(&[]));
    assert_eq!(*d.state().bank(Bank::B), BankState::Empty);
    assert!(d.bank_bytes(Bank::B).iter().all(|&b| b == 0xff));
    assert_eq!(d.state_read().len(), 1);
}

#[test]
fn testing_the_running_image_cancels_a_pending_update() {
    let mut d = Dev::<4, 4096>::new();
    let v1 = manifest(&d.v1.clone()).image_id();
    let v2 = d.rig.image(Bank::B, v(2), 2, 2);
    let id2 = manifest(&v2).image_id();
    d.upload(&v2, 512);
    let test = |hash: &[u8; 32]| map(&[("hash", bytes(hash)), ("confirm", Value::Bool(false))]);
    // Nothing pending: testing the running image is refused and changes nothing.
    let before = d.state_bytes();
    let r = d.call(WRITE, 1, 0, &test(&v1.digest));
    assert!(err(&r).is_some(), "{r:?}");
    assert_eq!(d.state_bytes(), before);
    // Test v2 (pending, preferred), then test v1 again: the update is taken back.
    d.call(WRITE, 1, 0, &test(&id2.digest));
    assert_eq!(d.state().preferred, Bank::B);
    let r = d.call(WRITE, 1, 0, &test(&v1.digest));
    assert!(err(&r).is_none(), "{r:?}");
    let s = d.state();
    assert_eq!(s.preferred, Bank::A);
    assert_eq!(*s.bank(Bank::B), BankState::Rejected(id2));
    assert_eq!(*s.bank(Bank::A), BankState::Confirmed(v1));
    let images = d.state_read();
    assert!(!boolean(&images[1], "pending") && boolean(&images[0], "active"));
    // The reset boots the running image; v2 does not run.
    assert_eq!(d.boot(), Bank::A);
}

/// A native request frame whose COBS bytes start with 0x06 0x09 (an SMP first-line marker):
/// sequence number 9, and a chunk whose first zero byte is the sixth of the message.
fn native_frame_starting_like_smp() -> Vec<u8> {
    let mut scratch = vec![0u8; MAX_FRAME];
    let mut out = vec![0u8; MAX_FRAME + 8];
    let body = Request::UploadChunk {
        offset: 5,
        data: &[0xaa, 0, 0xbb],
    };
    let n = encode_frame(&Envelope { seq: 9, body }, &mut scratch, &mut out).unwrap();
    out[..n].to_vec()
}

#[test]
fn one_uart_two_protocols() {
    let mut rig = Rig::<4, 4096>::new();
    let v1 = rig.image(Bank::A, v(1), 1, 1);
    rig.provision(&v1);
    let config = rig.config();
    let up = Updater::new(&mut rig.flash, config, Bank::A).unwrap();
    let mut console = Console::new(Server::new(up, config));
    let mut out = vec![0u8; CONSOLE_OUT];
    let mut feed = |console: &mut Console<'_, _>, bytes: &[u8]| {
        let mut got = Vec::new();
        for &b in bytes {
            let n = console.feed(b, &mut out);
            got.extend_from_slice(&out[..n]);
        }
        got
    };
    let smp_line = |seq: u8| {
        let p = packet(
            V2,
            READ,
            0,
            seq,
            0,
            &map(&[("d", Value::Text("ping".into()))]),
        );
        let mut lines = vec![0u8; MAX_ENCODED];
        let n = framing::encode(&p, &mut lines).unwrap();
        lines.truncate(n);
        lines
    };
    let native = native_frame_starting_like_smp();
    assert_eq!(&native[..2], &[0x06, 0x09]);
    // Log text, an SMP request, a native one (starting like SMP), SMP again, with no gaps.
    let mut stream = b"app: some log text\n".to_vec();
    stream.extend(smp_line(1));
    stream.extend(&native);
    stream.extend(smp_line(2));
    let got = feed(&mut console, &stream);
    // Two SMP answers (seq 1 and 2) and one native answer.
    let mut d = framing::Decoder::new();
    let mut smp_seqs = Vec::new();
    for &b in &got {
        if let Some(n) = d.push(b) {
            let p = d.packet(n);
            smp_seqs.push(p[6]);
            let body: Value = ciborium::from_reader(&p[8..]).unwrap();
            assert_eq!(get(&body, "r").and_then(Value::as_text), Some("ping"));
        }
    }
    assert_eq!(smp_seqs, [1, 2]);
    let natives: Vec<Envelope<Response>> = got
        .split(|&b| b == 0)
        .filter_map(|seg| decode_frame::<Envelope<Response>>(&mut seg.to_vec()).ok())
        .collect();
    assert_eq!(natives.len(), 1, "{natives:?}");
    assert_eq!(natives[0].seq, 9);
    assert!(matches!(natives[0].body, Response::Error(_)), "{natives:?}");
    // An SMP frame with a bad CRC gets no answer; garbage never makes the SMP side answer.
    let mut bad = smp_line(3);
    bad[5] ^= 0x01;
    let got = feed(&mut console, &bad);
    assert!(!got.windows(2).any(|w| w == [0x06, 0x09]));
    let mut rng = SplitMix64(5);
    let junk: Vec<u8> = (0..20_000).map(|_| rng.next_u64() as u8).collect();
    let got = feed(&mut console, &junk);
    let mut d = framing::Decoder::new();
    assert!(
        got.iter().all(|&b| d.push(b).is_none()),
        "garbage answered as SMP"
    );
    // Both still work.
    let got = feed(&mut console, &smp_line(4));
    assert!(got.starts_with(&[0x06, 0x09]));
    let got = feed(&mut console, &[&[0u8][..], &native].concat());
    assert!(got
        .split(|&b| b == 0)
        .any(|seg| decode_frame::<Envelope<Response>>(&mut seg.to_vec()).is_ok()));
}

#[test]
fn random_packets_never_panic_and_change_nothing_when_refused() {
    let mut d = Dev::<4, 4096>::new();
    let mut rng = SplitMix64(11);
    let mut out = vec![0u8; MAX_PACKET];
    for i in 0..3000 {
        let len = (rng.next_u64() % 200) as usize;
        let mut p: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if p.len() >= 8 && i % 2 == 0 {
            // Plausible headers: a known group and command, the right length.
            p[0] = (rng.next_u64() % 4) as u8 & 0b10 | 0x08;
            p[4] = 0;
            p[5] = (rng.next_u64() % 2) as u8;
            p[7] = (rng.next_u64() % 9) as u8;
            let n = (p.len() - 8) as u16;
            p[2..4].copy_from_slice(&n.to_be_bytes());
        }
        let up = d.up.as_mut().unwrap();
        let n = d.smp.respond(up, &p, &mut out);
        assert!(n == 0 || n >= 8);
    }
    // The device still answers and still runs v1 confirmed.
    assert!(matches!(d.state().bank(Bank::A), BankState::Confirmed(_)));
    assert_eq!(d.state_read().len(), 1);
}
