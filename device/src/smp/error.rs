//! SMP error codes and the one table that maps twinbank's refusals onto them.
//!
//! An SMP v1 request gets `{rc, rsn}`: an MCUmgr error code and the refusal's text. An SMP v2
//! request gets `{err: {group, rc}}` when the group has a code for the cause, and otherwise the
//! MCUmgr code as `{rc}` (what Zephyr does for errors that are not a group's; both clients read
//! either form). docs/design.md ("SMP") has this table as text.
//!
//! | refusal | v1 `rc` | v2 |
//! |---|---|---|
//! | header magic | EINVAL | image `INVALID_IMAGE_HEADER_MAGIC` (23) |
//! | header size, encrypted, non-bootable, first chunk shorter than a header | EINVAL / ENOTSUP | image `INVALID_IMAGE_HEADER` (22) |
//! | does not fit, too many sectors | EINVAL | image `INVALID_IMAGE_TOO_LARGE` (30) |
//! | not bank-bound, wrong bank | EINVAL | image `INVALID_FLASH_ADDRESS` (25) |
//! | TLV area missing / malformed / wrong TLV length | ECORRUPT | image `NO_TLVS` (4) / `INVALID_TLV` (5) / `TLV_INVALID_SIZE` (7) |
//! | no SHA-256 TLV | ECORRUPT | image `HASH_NOT_FOUND` (8) |
//! | content ≠ SHA-256 TLV, bytes ≠ announced `sha`/digest | ECORRUPT | rc ECORRUPT |
//! | `sha` missing or not 32 bytes, hash of a state write malformed | EINVAL | image `INVALID_HASH` (24) |
//! | `off` missing | EINVAL | image `INVALID_OFFSET` (20) |
//! | vendor/class id missing or different, untrusted key, bad or missing signature, no trusted key | EACCESSDENIED | rc EACCESSDENIED |
//! | downgrade (security counter), `upgrade` and not newer | EACCESSDENIED | image `CURRENT_VERSION_IS_NEWER` (27) |
//! | chunk past the announced length | EINVAL | image `INVALID_IMAGE_DATA_OVERRUN` (31) |
//! | resent bytes differ from those received | EINVAL | rc EINVAL |
//! | running image on trial | EBADSTATE | rc EBADSTATE |
//! | switch pending (an image already activated) | EBADSTATE | image `IMAGE_ALREADY_PENDING` (28) |
//! | hash of nothing, no fallback, upload incomplete | ENOENT | image `NO_IMAGE` (3) |
//! | test of the running image | EINVAL | image `IMAGE_SETTING_TEST_TO_ACTIVE_DENIED` (33) |
//! | confirm of an image that is not running, confirm while not on trial and not preferred | EBADSTATE | image `IMAGE_CONFIRMATION_DENIED` (32) |
//! | image number ≥ 3, erase of the running bank | EINVAL | image `INVALID_SLOT` (14) |
//! | flash or state write failure | EUNKNOWN | image `FLASH_WRITE_FAILED` (12) |
//! | not provisioned | EBADSTATE | rc EBADSTATE |
//! | unknown group or command | ENOTSUP | rc ENOTSUP |
//! | body not CBOR / wrong types | EINVAL | rc EINVAL |
//! | response too large | EMSGSIZE | rc EMSGSIZE |
//! | version > 2 | UNSUPPORTED_TOO_NEW | rc UNSUPPORTED_TOO_NEW |
//! | OS: unknown bootloader query | EINVAL | os `QUERY_YIELDS_NO_ANSWER` (3) |
//! | OS: reset into another boot mode | ENOTSUP | rc ENOTSUP |
//!
//! An out-of-order chunk is not an error in SMP: the answer is the offset the device expects.

use crate::image::ImageError;
use crate::update::UpdateError;
use core::fmt;

/// MCUmgr error codes (`enum mcumgr_err_t`), used as `rc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum MgmtErr {
    Unknown = 1,
    NoMem = 2,
    Inval = 3,
    NoEnt = 5,
    BadState = 6,
    MsgSize = 7,
    NotSup = 8,
    Corrupt = 9,
    AccessDenied = 11,
    TooNew = 13,
}

/// Image management group error codes (`enum img_mgmt_err_code_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ImgErr {
    NoImage = 3,
    NoTlvs = 4,
    InvalidTlv = 5,
    TlvInvalidSize = 7,
    HashNotFound = 8,
    FlashWriteFailed = 12,
    InvalidSlot = 14,
    InvalidOffset = 20,
    InvalidLength = 21,
    InvalidImageHeader = 22,
    InvalidImageHeaderMagic = 23,
    InvalidHash = 24,
    InvalidFlashAddress = 25,
    CurrentVersionIsNewer = 27,
    ImageAlreadyPending = 28,
    InvalidImageTooLarge = 30,
    InvalidImageDataOverrun = 31,
    ImageConfirmationDenied = 32,
    ImageSettingTestToActiveDenied = 33,
}

/// OS management group error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum OsErr {
    QueryYieldsNoAnswer = 3,
}

/// The group code of a refusal, when its group has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupErr {
    /// Image management (group 1).
    Image(ImgErr),
    /// OS management (group 0).
    Os(OsErr),
}

impl GroupErr {
    /// (group, rc) as the v2 `err` map carries them.
    pub fn pair(self) -> (u16, i32) {
        match self {
            GroupErr::Image(e) => (super::GROUP_IMAGE, e as i32),
            GroupErr::Os(e) => (super::GROUP_OS, e as i32),
        }
    }
}

/// Why a request was refused, in words (the v1 `rsn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The updater's refusal.
    Update(UpdateError),
    /// Anything else.
    Text(&'static str),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Update(e) => write!(f, "{e}"),
            Reason::Text(t) => f.write_str(t),
        }
    }
}

/// A refused request: codes for both SMP versions and the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The v1 code (and the v2 one when `group` is `None`).
    pub rc: MgmtErr,
    /// The v2 group code, when the group has one for the cause.
    pub group: Option<GroupErr>,
    /// What the v1 `rsn` says.
    pub reason: Reason,
}

impl Refusal {
    /// A refusal with a group code.
    pub const fn image(rc: MgmtErr, e: ImgErr, why: &'static str) -> Refusal {
        Refusal {
            rc,
            group: Some(GroupErr::Image(e)),
            reason: Reason::Text(why),
        }
    }

    /// A refusal with an MCUmgr code only.
    pub const fn mgmt(rc: MgmtErr, why: &'static str) -> Refusal {
        Refusal {
            rc,
            group: None,
            reason: Reason::Text(why),
        }
    }
}

impl From<UpdateError> for Refusal {
    fn from(e: UpdateError) -> Refusal {
        let (rc, group) = codes(&e);
        Refusal {
            rc,
            group: group.map(GroupErr::Image),
            reason: Reason::Update(e),
        }
    }
}

/// The table of the module documentation, for the updater's errors.
fn codes(e: &UpdateError) -> (MgmtErr, Option<ImgErr>) {
    use ImgErr as I;
    use MgmtErr as M;
    match e {
        UpdateError::Image(i) => match i {
            ImageError::Flash(_) => (M::Unknown, Some(I::FlashWriteFailed)),
            ImageError::BadMagic(_) => (M::Inval, Some(I::InvalidImageHeaderMagic)),
            ImageError::HeaderSizeTooSmall(_) => (M::Inval, Some(I::InvalidImageHeader)),
            ImageError::Encrypted | ImageError::NotBootable => {
                (M::NotSup, Some(I::InvalidImageHeader))
            }
            ImageError::DoesNotFit { .. } => (M::Inval, Some(I::InvalidImageTooLarge)),
            ImageError::NotBankBound | ImageError::WrongBank { .. } => {
                (M::Inval, Some(I::InvalidFlashAddress))
            }
            ImageError::Truncated => (M::Corrupt, Some(I::NoTlvs)),
            ImageError::BadTlvArea | ImageError::AnnouncementTooLarge => {
                (M::Corrupt, Some(I::InvalidTlv))
            }
            ImageError::MalformedTlv(_) => (M::Corrupt, Some(I::TlvInvalidSize)),
            ImageError::MissingHash => (M::Corrupt, Some(I::HashNotFound)),
            ImageError::HashMismatch => (M::Corrupt, None),
            ImageError::MissingVendorId
            | ImageError::VendorIdMismatch
            | ImageError::MissingClassId
            | ImageError::ClassIdMismatch
            | ImageError::NoTrustedKeys
            | ImageError::MissingSignature
            | ImageError::PureSignature
            | ImageError::UntrustedKey
            | ImageError::BadSignature => (M::AccessDenied, None),
            ImageError::SecurityCounterTooLow { .. } => {
                (M::AccessDenied, Some(I::CurrentVersionIsNewer))
            }
        },
        UpdateError::State(_) | UpdateError::Flash(_) => (M::Unknown, Some(I::FlashWriteFailed)),
        UpdateError::NotProvisioned | UpdateError::TrialInProgress => (M::BadState, None),
        UpdateError::SwitchPending => (M::BadState, Some(I::ImageAlreadyPending)),
        UpdateError::NoUpload | UpdateError::Incomplete { .. } | UpdateError::NoSuchUpload => {
            (M::NoEnt, Some(I::NoImage))
        }
        UpdateError::OutOfOrder { .. } | UpdateError::ContentMismatch { .. } => (M::Inval, None),
        UpdateError::OutOfRange => (M::Inval, Some(I::InvalidImageDataOverrun)),
        UpdateError::DigestMismatch => (M::Corrupt, None),
        UpdateError::NothingToCancel => (M::NoEnt, Some(I::NoImage)),
        UpdateError::InRecovery => (M::NotSup, None),
        UpdateError::NotPending => (M::BadState, Some(I::ImageConfirmationDenied)),
        UpdateError::NoFallback => (M::NoEnt, Some(I::NoImage)),
        UpdateError::TooManySectors => (M::Inval, Some(I::InvalidImageTooLarge)),
        UpdateError::NotAnUpgrade { .. } => (M::AccessDenied, Some(I::CurrentVersionIsNewer)),
    }
}
