//! The operator's way out of a damaged data directory: `peerdex-server
//! check` and `peerdex-server salvage`.
//!
//! Why: start-up refuses a journal damaged in the middle (see
//! [`crate::durable::journal`]) instead of dropping the acknowledged operations
//! after the damage. The operator then needs to know what is intact
//! ([`check`], which changes nothing) and a way to start again with
//! everything before the damage, knowing exactly what to redo
//! ([`salvage`]).
//!
//! Salvage, in an order that a crash at any point leaves repeatable:
//! 1. every segment before the damaged one, then the whole records of the
//!    damaged one, are applied to the database, each in one durable
//!    transaction (replay is idempotent);
//! 2. the segments before the damaged one are deleted (they are in the
//!    database; left behind, a later start would replay them over newer
//!    records);
//! 3. the damaged segment and every later one are moved into
//!    [`DAMAGED_DIR`], unchanged, and both directories synced.
//!
//! Until step 3 the journal still holds the damage, so the server still
//! refuses to start and salvage can simply be run again.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::durable::journal::{
    self, Damage, Ending, JournalError, LostRecord, SegmentRead, DAMAGED_DIR,
};
use crate::durable::store::{self, Store, StoreError, Survey, DB_FILE_NAME};
use crate::effect::Effect;

/// What [`check`] found.
#[derive(Debug)]
pub struct CheckReport {
    /// The data directory.
    pub dir: PathBuf,
    /// Each journal segment, oldest first.
    pub segments: Vec<SegmentCheck>,
    /// The database.
    pub database: Survey,
    /// Files an earlier salvage moved into [`DAMAGED_DIR`].
    pub moved_aside: Vec<PathBuf>,
}

/// One segment as [`check`] found it.
#[derive(Debug)]
pub struct SegmentCheck {
    /// Its file.
    pub path: PathBuf,
    /// Whole records before its ending (all of them when clean).
    pub records: usize,
    /// Effects in them.
    pub effects: usize,
    /// How they end.
    pub ending: Ending,
    /// Whole records found after a damage (lost if it is set aside).
    pub whole_after_damage: usize,
}

impl CheckReport {
    /// True when something is damaged: a segment (a torn tail is not
    /// damage) or the database.
    pub fn damaged(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s.ending, Ending::Damaged(_)))
            || matches!(self.database, Survey::Damaged(_))
    }
}

/// Reports what of the journal and the database in `dir` is intact,
/// without changing anything (the database is opened read-only).
pub fn check(dir: &Path) -> Result<CheckReport, StoreError> {
    let files = journal::segments(dir)?;
    let segments = journal::read_segments(&files)?
        .iter()
        .map(|read| SegmentCheck {
            path: read.path().to_path_buf(),
            records: read.records(),
            effects: read.effects(),
            ending: read.ending().clone(),
            whole_after_damage: read
                .lost_after_damage()
                .iter()
                .filter(|r| matches!(r, LostRecord::Whole { .. }))
                .count(),
        })
        .collect();
    let aside = dir.join(DAMAGED_DIR);
    let moved_aside = if aside.is_dir() {
        journal::segments(&aside)?
            .into_iter()
            .map(|s| s.path)
            .collect()
    } else {
        Vec::new()
    };
    Ok(CheckReport {
        dir: dir.to_path_buf(),
        segments,
        database: store::survey(dir),
        moved_aside,
    })
}

/// What [`salvage`] did.
#[derive(Debug, Default)]
pub struct SalvageReport {
    /// The data directory.
    pub dir: PathBuf,
    /// The first damage found, and in which segment; `None`: nothing done.
    pub damage: Option<(PathBuf, Damage)>,
    /// Segments whose whole records (before the damage, for the damaged
    /// one) were applied to the database: path, records, effects.
    pub applied: Vec<(PathBuf, usize, usize)>,
    /// Segments moved aside: from, to.
    pub moved: Vec<(PathBuf, PathBuf)>,
    /// What is lost: every record from the damaged one on, with the
    /// segment it was in.
    pub lost: Vec<(PathBuf, LostRecord)>,
}

/// Keeps everything before the first damage of the journal in `dir` and
/// sets the rest aside (module doc); does nothing when the journal is
/// intact.
pub fn salvage(dir: &Path) -> Result<SalvageReport, StoreError> {
    let files = journal::segments(dir)?;
    let reads = journal::read_segments(&files)?;
    let mut report = SalvageReport {
        dir: dir.to_path_buf(),
        ..SalvageReport::default()
    };
    let Some(first) = reads.iter().position(|r| r.damage().is_some()) else {
        return Ok(report);
    };
    let aside = dir.join(DAMAGED_DIR);
    let moves = reads[first..]
        .iter()
        .map(|read| {
            let name = read.path().file_name().unwrap_or_default();
            (read.path().to_path_buf(), aside.join(name))
        })
        .collect::<Vec<_>>();
    // Refused before anything changes: segment numbers never repeat
    // (journal::next_segment_number), so only a file put there by hand
    // can be in the way.
    if let Some((_, to)) = moves.iter().find(|(_, to)| to.exists()) {
        return Err(io_error(
            to,
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file of that name was moved aside before; move it elsewhere first",
            ),
        ));
    }

    let store = Store::open(dir)?;
    for read in &reads[..=first] {
        store.apply_segment(read)?;
        report
            .applied
            .push((read.path().to_path_buf(), read.records(), read.effects()));
    }
    for read in &reads[..first] {
        std::fs::remove_file(read.path()).map_err(|source| io_error(read.path(), source))?;
    }
    journal::sync_dir(dir)?;
    std::fs::create_dir_all(&aside).map_err(|source| io_error(&aside, source))?;
    journal::sync_dir(dir)?;
    for (from, to) in &moves {
        std::fs::rename(from, to).map_err(|source| io_error(from, source))?;
    }
    journal::sync_dir(&aside)?;
    journal::sync_dir(dir)?;
    store.close()?;

    let damaged = &reads[first];
    if let Some(damage) = damaged.damage() {
        report.damage = Some((damaged.path().to_path_buf(), damage.clone()));
    }
    report.lost = lost_records(damaged, &reads[first + 1..]);
    report.moved = moves;
    Ok(report)
}

/// Every record from the damage in `damaged` on, then all of `later`.
fn lost_records(damaged: &SegmentRead, later: &[SegmentRead]) -> Vec<(PathBuf, LostRecord)> {
    let in_segment = |read: &SegmentRead, records: Vec<LostRecord>| {
        let path = read.path().to_path_buf();
        records.into_iter().map(move |r| (path.clone(), r))
    };
    let mut lost: Vec<_> = in_segment(damaged, damaged.lost_after_damage()).collect();
    for read in later {
        lost.extend(in_segment(read, read.all_records()));
    }
    lost
}

fn io_error(path: &Path, source: io::Error) -> StoreError {
    JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
    .into()
}

/// A file's name, for report lines (its directory is printed once).
fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// An error and its causes on one line.
struct Chain<'a>(&'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data dir {}", self.dir.display())?;
        if self.segments.is_empty() {
            writeln!(f, "journal: no segments")?;
        }
        for s in &self.segments {
            let name = name(&s.path);
            let (records, effects) = (s.records, s.effects);
            match &s.ending {
                Ending::Clean => {
                    writeln!(f, "journal {name}: {records} records ({effects} effects), intact")?
                }
                Ending::TornTail { offset, flaw } => writeln!(
                    f,
                    "journal {name}: {records} records ({effects} effects) intact, then a torn tail at offset {offset} (the record {flaw}: the last write, never acknowledged; dropped at start-up)"
                )?,
                Ending::Damaged(damage) => writeln!(
                    f,
                    "journal {name}: damaged at offset {}: {damage}; {records} records ({effects} effects) intact before it, {} whole records after it",
                    damage.offset, s.whole_after_damage
                )?,
            }
        }
        let db = DB_FILE_NAME;
        match &self.database {
            Survey::Missing => writeln!(f, "database {db}: absent (created at the next start)")?,
            Survey::Intact { users, files } => {
                writeln!(f, "database {db}: intact, {users} users, {files} files")?
            }
            Survey::NeedsRepair => writeln!(
                f,
                "database {db}: not closed cleanly; redb repairs it when the server next opens it (not read)"
            )?,
            Survey::InUse => writeln!(
                f,
                "database {db}: open by a running server (stop it for a full check; not read)"
            )?,
            Survey::OlderSchema(version) => writeln!(
                f,
                "database {db}: schema version {version}, migrated when the server next opens it (not read)"
            )?,
            Survey::Damaged(err) => writeln!(f, "database {db}: DAMAGED: {}", Chain(err))?,
        }
        for path in &self.moved_aside {
            writeln!(
                f,
                "moved aside by an earlier salvage: {DAMAGED_DIR}/{}",
                name(path)
            )?;
        }
        if self.damaged() {
            write!(f, "result: damage found")?;
            if self
                .segments
                .iter()
                .any(|s| matches!(s.ending, Ending::Damaged(_)))
            {
                write!(
                    f,
                    "; `peerdex-server salvage --data-dir {}` keeps what precedes the journal damage and lists what is lost",
                    self.dir.display()
                )?;
            }
            writeln!(f)
        } else {
            writeln!(f, "result: intact")
        }
    }
}

impl fmt::Display for SalvageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data dir {}", self.dir.display())?;
        let Some((path, damage)) = &self.damage else {
            return writeln!(f, "nothing to salvage: the journal is intact");
        };
        writeln!(
            f,
            "damage: {} at offset {}: {damage}",
            name(path),
            damage.offset
        )?;
        for (path, records, effects) in &self.applied {
            writeln!(
                f,
                "kept: {}: {records} records ({effects} effects) applied to {DB_FILE_NAME}",
                name(path)
            )?;
        }
        for (from, to) in &self.moved {
            writeln!(f, "moved aside: {} -> {}", name(from), to.display())?;
        }
        for (path, record) in &self.lost {
            write!(f, "lost record: {} ", name(path))?;
            match record {
                LostRecord::Whole {
                    offset,
                    len,
                    effects,
                } => {
                    write!(f, "offset {offset} length {len}: ")?;
                    write_ops(f, effects)?;
                }
                LostRecord::Damaged {
                    offset,
                    end,
                    len,
                    flaw,
                    unverified,
                } => {
                    write!(f, "offset {offset}")?;
                    if let Some(len) = len {
                        write!(f, " length {len}")?;
                    }
                    write!(f, ": damaged (the record {flaw}; bytes up to offset {end})")?;
                    if !unverified.is_empty() {
                        write!(f, "; as far as it decodes, unverified: ")?;
                        write_ops(f, unverified)?;
                    }
                }
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "lost: {} records; redo what they did (the operations above)",
            self.lost.len()
        )
    }
}

/// `effects` as the operations that make them, separated by ", ".
fn write_ops(f: &mut fmt::Formatter<'_>, effects: &[Effect]) -> fmt::Result {
    for (i, effect) in effects.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_op(f, effect)?;
    }
    Ok(())
}

/// One effect as the operation that makes it (names quoted, so that any
/// byte shows).
fn write_op(f: &mut fmt::Formatter<'_>, effect: &Effect) -> fmt::Result {
    match effect {
        Effect::AddUser(user) => write!(f, "REGISTER {user:?}"),
        Effect::RemoveUser(user) => write!(f, "UNREGISTER {user:?}"),
        Effect::SetAddress(user, addr) => {
            write!(f, "CONNECT {user:?} {} {}", addr.ip(), addr.port())
        }
        Effect::ClearAddress(user) => write!(f, "DISCONNECT {user:?}"),
        Effect::SetHeldAddress {
            user,
            addr,
            session,
        } => write!(
            f,
            "CONNECT {user:?} {} {} session {session}",
            addr.ip(),
            addr.port()
        ),
        // The hash is not a password, but nothing gains from printing it.
        Effect::SetCredential { user, .. } => write!(f, "SET_PASSWORD {user:?}"),
        Effect::SetLastSeen { user, at } => write!(f, "LAST_SEEN {user:?} {at}"),
        Effect::AddFile {
            user,
            file,
            description,
        } => write!(f, "PUBLISH {user:?} {file:?} {description:?}"),
        Effect::RemoveFile { user, file } => write!(f, "DELETE {user:?} {file:?}"),
        Effect::SetContent {
            user,
            file,
            size,
            hash,
        } => {
            write!(f, "CONTENT {user:?} {file:?} size {size} blake3 ")?;
            hash.iter().try_for_each(|b| write!(f, "{b:02x}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::engine::Engine;
    use crate::durable::journal::{segment_path, Journal};

    fn users(prefix: &str, n: usize) -> Vec<Vec<Effect>> {
        (1..=n)
            .map(|i| vec![Effect::AddUser(format!("{prefix}{i}"))])
            .collect()
    }

    /// Segments 1 (a1, a2), 2 (b1 .. b10, the 5th record damaged) and 3
    /// (c1, c2); the damaged record's offset.
    fn damaged_journal(dir: &Path) -> u64 {
        let mut journal = Journal::create(dir, 1).unwrap();
        for record in users("a", 2) {
            journal.append(&record).unwrap();
        }
        journal.rotate().unwrap();
        let mut damaged_at = 0;
        for (i, record) in users("b", 10).iter().enumerate() {
            if i == 4 {
                damaged_at = 8 + journal.len();
            }
            journal.append(record).unwrap();
        }
        journal.rotate().unwrap();
        for record in users("c", 2) {
            journal.append(&record).unwrap();
        }
        drop(journal);
        let path = segment_path(dir, 2);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[damaged_at as usize + 12 + 3] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        damaged_at
    }

    #[test]
    fn check_reports_and_salvage_keeps_what_precedes_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        let at = damaged_journal(dir.path());
        let before: Vec<Vec<u8>> = (1..=3)
            .map(|n| std::fs::read(segment_path(dir.path(), n)).unwrap())
            .collect();

        let report = check(dir.path()).unwrap();
        assert!(report.damaged());
        let endings: Vec<_> = report.segments.iter().map(|s| &s.ending).collect();
        assert_eq!(endings[0], &Ending::Clean);
        assert!(matches!(endings[1], Ending::Damaged(d) if d.offset == at));
        assert_eq!(endings[2], &Ending::Clean);
        assert_eq!(report.segments[1].records, 4);
        assert_eq!(report.segments[1].whole_after_damage, 5);
        assert!(matches!(report.database, Survey::Missing));
        let text = report.to_string();
        assert!(text.contains(&format!("damaged at offset {at}")), "{text}");
        for (n, bytes) in (1..=3).zip(&before) {
            assert_eq!(&std::fs::read(segment_path(dir.path(), n)).unwrap(), bytes);
        }
        assert!(
            !dir.path().join(DB_FILE_NAME).exists(),
            "check created the database"
        );

        let report = salvage(dir.path()).unwrap();
        assert_eq!(report.damage.as_ref().unwrap().1.offset, at);
        let applied: Vec<_> = report.applied.iter().map(|(_, r, _)| *r).collect();
        assert_eq!(applied, [2, 4]);
        assert_eq!(report.moved.len(), 2);
        // The damaged record, b6 .. b10, c1 and c2.
        assert_eq!(report.lost.len(), 8);
        let text = report.to_string();
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("lost record"))
                .count(),
            8
        );
        for user in ["b6", "b10", "c1", "c2"] {
            assert!(text.contains(&format!("REGISTER \"{user}\"")), "{text}");
        }
        // Segment 1 is in the database and deleted; 2 and 3 moved aside
        // unchanged.
        assert!(journal::segments(dir.path()).unwrap().is_empty());
        let aside = dir.path().join(DAMAGED_DIR);
        assert_eq!(
            std::fs::read(aside.join("peerdex.journal.000000000002")).unwrap(),
            before[1]
        );
        assert_eq!(
            std::fs::read(aside.join("peerdex.journal.000000000003")).unwrap(),
            before[2]
        );

        // Salvage again: nothing to do.
        assert!(salvage(dir.path()).unwrap().damage.is_none());
        let report = check(dir.path()).unwrap();
        assert!(!report.damaged(), "{report}");
        assert_eq!(report.moved_aside.len(), 2);

        let engine = Engine::open(dir.path()).unwrap();
        let names = engine.state().tables().user_names();
        assert_eq!(names, ["a1", "a2", "b1", "b2", "b3", "b4"]);
        // New segments are numbered past the ones moved aside.
        let numbers: Vec<u64> = journal::segments(dir.path())
            .unwrap()
            .iter()
            .map(|s| s.number)
            .collect();
        assert_eq!(numbers, [4]);
        engine.close().unwrap();
    }

    /// What salvage lists of lost account records: the operations, never
    /// a credential.
    #[test]
    fn account_effects_are_listed_without_their_credential() {
        struct Listed(Vec<Effect>);
        impl fmt::Display for Listed {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_ops(f, &self.0)
            }
        }
        let text = Listed(vec![
            Effect::SetCredential {
                user: "al".into(),
                phc: "$argon2id$v=19$secret".into(),
            },
            Effect::SetHeldAddress {
                user: "al".into(),
                addr: "10.0.0.1:80".parse().unwrap(),
                session: 4,
            },
            Effect::SetLastSeen {
                user: "al".into(),
                at: 7,
            },
        ])
        .to_string();
        assert_eq!(
            text,
            "SET_PASSWORD \"al\", CONNECT \"al\" 10.0.0.1 80 session 4, LAST_SEEN \"al\" 7"
        );
    }
}
