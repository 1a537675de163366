//! A user's disk quota as an account, not a scan: bytes and files in the home
//! (partial files included), counted once when the server starts and kept current.
//! A `put` reserves what each file will add when it is planned (refused `quota` if
//! it does not fit), a stream of unknown size is charged as it arrives, and each
//! entry settles to what it really left on disk. All sessions of one user share one
//! account, so two uploads at once cannot both take the last gigabyte.

use std::sync::{Arc, Mutex};

use super::Refusal;
use super::home::Footprint;
use crate::escape::escape;
use crate::proto::message::ErrorCode;

/// What a user may hold; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub bytes: Option<u64>,
    pub files: Option<u64>,
}

#[derive(Debug, Default)]
struct Ledger {
    limits: Limits,
    /// On disk, as far as settled entries tell.
    used: Footprint,
    /// Promised to entries still on their way.
    reserved: Footprint,
    /// An entry ended without settling (a cut session): `used` may be off until
    /// the next count.
    stale: bool,
}

/// One user's account, shared by all their sessions.
#[derive(Debug, Clone, Default)]
pub struct Account(Arc<Mutex<Ledger>>);

impl Account {
    pub fn new(limits: Limits, used: Footprint) -> Account {
        Account(Arc::new(Mutex::new(Ledger {
            limits,
            used,
            ..Ledger::default()
        })))
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.0.lock().expect("no panics while holding the lock")
    }

    /// New limits (the users file was read again); what is used stays.
    pub fn set_limits(&self, limits: Limits) {
        self.ledger().limits = limits;
    }

    /// What is used and what may be, for `usage`.
    pub fn usage(&self) -> (Footprint, Limits) {
        let ledger = self.ledger();
        (ledger.used, ledger.limits)
    }

    /// Whether the account should be counted again from the disk (an entry ended
    /// without settling); the caller recounts and calls [`Account::recount`].
    pub fn is_stale(&self) -> bool {
        self.ledger().stale
    }

    /// Something changed in the home behind the account's back (a sweep): count
    /// it again when next used.
    pub fn mark_stale(&self) {
        self.ledger().stale = true;
    }

    /// The home was counted again: `used` is what is on disk now.
    pub fn recount(&self, used: Footprint) {
        let mut ledger = self.ledger();
        ledger.used = used;
        ledger.stale = false;
    }

    /// A file of the home was removed: its room is free again.
    pub fn release(&self, freed: Footprint) {
        let mut ledger = self.ledger();
        ledger.used.bytes = ledger.used.bytes.saturating_sub(freed.bytes);
        ledger.used.files = ledger.used.files.saturating_sub(freed.files);
    }

    /// Reserves room for an entry that will turn `before` (what it has on disk now:
    /// partial data, a file it replaces) into `after` (the finished file), for the
    /// entry `path`; `quota` if that does not fit.
    pub fn reserve(
        &self,
        path: &str,
        before: Footprint,
        after: Footprint,
    ) -> Result<Reservation, Refusal> {
        let grows = Footprint {
            bytes: after.bytes.saturating_sub(before.bytes),
            files: after.files.saturating_sub(before.files),
        };
        let mut ledger = self.ledger();
        check(&ledger, grows, path)?;
        ledger.reserved.bytes += grows.bytes;
        ledger.reserved.files += grows.files;
        Ok(Reservation {
            account: self.clone(),
            before,
            held: grows,
            settled: false,
        })
    }
}

/// Whether `more` fits beside what is used and reserved.
fn check(ledger: &Ledger, more: Footprint, path: &str) -> Result<(), Refusal> {
    // Only what grows is checked: an entry that adds nothing fits even at the limit.
    let over = |limit: Option<u64>, used: u64, reserved: u64, more: u64| {
        more > 0
            && limit.is_some_and(|limit| used.saturating_add(reserved).saturating_add(more) > limit)
    };
    let (used, reserved) = (ledger.used, ledger.reserved);
    let bytes_over = over(ledger.limits.bytes, used.bytes, reserved.bytes, more.bytes);
    let files_over = over(ledger.limits.files, used.files, reserved.files, more.files);
    if bytes_over || files_over {
        let what = if bytes_over { "bytes" } else { "files" };
        return Err(Refusal::new(
            ErrorCode::Quota,
            format!("{}: over the user's quota of {what}", escape(path)),
        ));
    }
    Ok(())
}

/// Room held for one entry until it settles; released (and the account marked for
/// a recount) if dropped unsettled.
#[derive(Debug)]
pub struct Reservation {
    account: Account,
    /// What the entry had on disk when it was planned.
    before: Footprint,
    /// Held beyond `used` until settled.
    held: Footprint,
    settled: bool,
}

impl Reservation {
    /// Charges `bytes` more as they arrive (a stream of unknown size); `quota` if
    /// they do not fit.
    pub fn charge(&mut self, path: &str, bytes: u64) -> Result<(), Refusal> {
        let mut ledger = self.account.ledger();
        check(&ledger, Footprint { bytes, files: 0 }, path)?;
        ledger.reserved.bytes += bytes;
        self.held.bytes += bytes;
        Ok(())
    }

    /// The entry is over and left `after` on disk.
    pub fn settle(mut self, after: Footprint) {
        let mut ledger = self.account.ledger();
        ledger.reserved.bytes -= self.held.bytes;
        ledger.reserved.files -= self.held.files;
        ledger.used.bytes = (ledger.used.bytes + after.bytes).saturating_sub(self.before.bytes);
        ledger.used.files = (ledger.used.files + after.files).saturating_sub(self.before.files);
        self.settled = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            let mut ledger = self.account.ledger();
            ledger.reserved.bytes -= self.held.bytes;
            ledger.reserved.files -= self.held.files;
            ledger.stale = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(bytes: u64, files: u64) -> Footprint {
        Footprint { bytes, files }
    }

    #[test]
    fn reservations_share_one_account_and_settle_to_what_is_on_disk() {
        let account = Account::new(
            Limits {
                bytes: Some(100),
                files: Some(3),
            },
            fp(40, 1),
        );
        let a = account.reserve("a", fp(0, 0), fp(50, 1)).unwrap();
        // A second session of the same user: 40 + 50 + 20 > 100.
        let refused = account.reserve("b", fp(0, 0), fp(20, 1)).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Quota);
        a.settle(fp(50, 1));
        assert_eq!(account.usage().0, fp(90, 2));
        // A resumed file needs only the rest.
        let resumed = account.reserve("c", fp(5, 1), fp(15, 1)).unwrap();
        resumed.settle(fp(15, 1));
        assert_eq!(account.usage().0, fp(100, 2));
        // A file that does not grow anything fits even at the limit.
        let replace = account.reserve("a", fp(50, 1), fp(50, 1)).unwrap();
        replace.settle(fp(50, 1));
        assert_eq!(account.usage().0, fp(100, 2));
    }

    #[test]
    fn a_stream_is_charged_as_it_arrives_and_a_dropped_entry_asks_for_a_recount() {
        let account = Account::new(
            Limits {
                bytes: Some(10),
                files: None,
            },
            fp(0, 0),
        );
        let mut stream = account.reserve("s", fp(0, 0), fp(0, 1)).unwrap();
        stream.charge("s", 8).unwrap();
        assert_eq!(stream.charge("s", 8).unwrap_err().code, ErrorCode::Quota);
        drop(stream);
        assert!(account.is_stale());
        account.recount(fp(0, 0));
        assert!(account.reserve("t", fp(0, 0), fp(10, 1)).is_ok());
    }
}
