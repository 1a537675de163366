//! Quotas: the operations on a home that go through its [`Ledger`] (see
//! `fs::ledger` for the accounting rule and why it cannot drift): the first count
//! and the counts made again (at a reload, and by the sweep of stale partials),
//! `mkdir`, `remove`, `rename` and that sweep, each under the
//! ledger's lock, each charging what it makes and giving back exactly what it
//! measured leaving the disk.

use super::Refusal;
use super::home::Home;
pub(crate) use super::ledger::{Account, Footprint, HOME_CHANGED, Ledger, Limits, Reservation};
use super::ledger::{deep_enough, nameable};

impl Ledger {
    /// Counts `home` from the disk if it was not yet, under this ledger's lock
    /// only (other users' logins do not wait for it), and takes `limits` (from the
    /// users of version `from`: never over those of newer users).
    pub(crate) fn open(&self, home: &Home, (limits, from): (Limits, u64)) {
        let mut books = self.books();
        if !books.counted {
            books.on_disk = home.footprint();
            books.counted = true;
        }
        books.take_limits(limits, from);
    }

    /// Counts `home` from the disk again, if it was counted, under this ledger's
    /// lock: what an administrator added or removed behind the server's back since
    /// is then counted (a reload asks for it). Exact even with uploads in flight,
    /// since every change beneath the home is made under this same lock.
    pub(crate) fn recount(&self, home: &Home) {
        let mut books = self.books();
        if books.counted {
            books.on_disk = home.footprint();
        }
    }

    /// New limits (the users file was read again), of the users of version `from`,
    /// applied at once unless the ledger holds newer users' already.
    pub(crate) fn set_limits(&self, limits: Limits, from: u64) {
        self.ask(Some((limits, from)), false);
    }

    /// What is on disk and what may be, for `usage`.
    pub(crate) fn usage(&self) -> (Footprint, Limits) {
        let books = self.books();
        (books.on_disk, books.limits)
    }

    /// `mkdir` in `home`: each directory made is charged as it is made, under the
    /// lock (`quota` where the next does not fit: those made before it stay, as
    /// `mkdir -p` leaves them); the depth is checked first. Each of `mkdir`,
    /// `remove` and `rename` is `denied` where a reload stopped the home's sessions
    /// since `since` ([`Books::still`]).
    pub(crate) fn mkdir(&self, home: &Home, path: &str, since: u64) -> Result<(), Refusal> {
        deep_enough(&[], path)?;
        let mut books = self.books();
        books.still(since)?;
        home.mkdir(path, &mut books)
    }

    /// `remove` in `home`: `busy` while a session writes the path or beneath it;
    /// what left the disk (xfer's partials in a directory removed included) is
    /// given back, under the lock.
    pub(crate) fn remove(
        &self,
        home: &Home,
        path: &str,
        (links, since): (bool, u64),
    ) -> Result<(), Refusal> {
        let mut books = self.books();
        books.still(since)?;
        books.unclaimed(path)?;
        home.remove(path, links, &mut books)
    }

    /// `rename` in `home`: `busy` while a session writes either path (or beneath or
    /// above it); `bad_path` where what moves would lie deeper, or at a longer path,
    /// than the server keeps.
    pub(crate) fn rename(
        &self,
        home: &Home,
        (from, to): (&str, &str),
        (links, since): (bool, u64),
    ) -> Result<(), Refusal> {
        let books = self.books();
        books.still(since)?;
        books.unclaimed(from)?;
        books.unclaimed(to)?;
        // What moves keeps its depth and its paths below the new name.
        let (below, bytes) = home.height(from);
        deep_enough(&vec![""; below], to)?;
        nameable("", to.len() + bytes, to)?;
        home.rename(from, to, links)
    }

    /// Removes partials of `home` last modified before `cutoff` (seconds since the
    /// epoch) and temporaries unchanged since the server `started` (nanoseconds
    /// since the epoch) that no session has open ([`Home::sweep`]); what left is
    /// given back.
    pub(crate) fn sweep(&self, home: &Home, (cutoff, started): (i64, i128)) -> usize {
        let mut books = self.books();
        let counted = books.counted;
        let removed = home.sweep((cutoff, started), &mut |identity| !books.is_open(identity));
        if counted {
            // Counted again rather than shrunk by what went: an administrator's
            // changes behind the server's back are caught up with every hour.
            books.on_disk = home.footprint();
        }
        removed.files as usize
    }
}
