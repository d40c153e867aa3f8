//! The directory's engine: recovery at start-up, one batch staged at a
//! time while running, and a clean close.
//!
//! Start-up ([`Engine::open`]): the journal segments a previous run left are
//! read and checked first; if one is damaged (not a torn tail, see
//! [`crate::durable::journal`]) start-up stops with an error naming the file
//! and the offset, and nothing is changed. Otherwise each is applied to the
//! database in one durable transaction and only then deleted, the database
//! is loaded into memory ([`crate::state`]) and a new segment is started.
//! Users held by a session of the previous process (every session died
//! with it) are then disconnected, last seen now, in the new segment's
//! first record, synced. Nothing is served before this is done. A panic
//! inside redb while opening, replaying or loading is an error naming the
//! database file.
//!
//! A batch ([`Engine::stage`]): the rules run against the state seen
//! through the batch's own changes ([`Batch`]); the effects are appended to
//! the journal, not synced, and applied to the shared state. Nobody is
//! answered from that state until the journal is synced past it: mutations
//! are answered by the syncer ([`crate::durable::writer`]), readers wait for
//! it ([`crate::durable::writer::Durability`]). A full segment is handed to
//! the checkpointer ([`crate::durable::checkpoint`]).
//!
//! Only one thread calls [`Engine::stage`] (the group-commit writer,
//! [`crate::durable::writer`]); every reader uses [`Engine::state`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use peerdex_protocol::{Operation, Outcome};

use crate::actor::{Actor, AuthMode, Takeover};
use crate::durable::checkpoint::Checkpointer;
use crate::durable::journal::{self, Ending, Journal, JournalError, SyncHandle, SEGMENT_BYTES};
use crate::durable::quiet_panic;
use crate::durable::store::{Store, StoreError, DB_FILE_NAME};
use crate::effect::Effect;
use crate::rules::{self, Context};
use crate::state::{Batch, State};

/// Reads the time a batch records (DISCONNECT's last seen), in seconds
/// since the Unix epoch.
pub type Clock = fn() -> u64;

/// The system clock; a clock before 1970 reads as 0.
pub fn system_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// One mutation to apply.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// The user the operation acts for (well-formed; may not exist).
    pub user: String,
    /// The operation and its fields.
    pub operation: Operation,
    /// The TCP source IP, recorded by CONNECT when the client sent no IP.
    pub peer_ip: IpAddr,
    /// Who asks: decides what a protected account allows.
    pub actor: Actor,
    /// CONNECT only: the listed holder was found gone, so the entry may be
    /// replaced if it is still that one.
    pub takeover: Option<Takeover>,
}

/// The open directory: state in memory, journal, checkpointer.
pub struct Engine {
    /// The data directory.
    dir: PathBuf,
    /// The state every reader sees, updated by [`Engine::stage`].
    state: Arc<State>,
    /// The segment being appended to.
    journal: Journal,
    /// Applies finished segments to the database.
    checkpointer: Checkpointer,
    /// Segment size that triggers a rotation.
    segment_bytes: u64,
    /// Sequence number of the last batch written (0: none yet).
    seq: u64,
    /// Who may change the directory, decided by the rules.
    auth: AuthMode,
    /// The time each batch records.
    clock: Clock,
}

/// A batch written and applied, waiting for its journal sync.
#[derive(Debug)]
pub struct Staged {
    /// One outcome per mutation, to send once `sync` succeeded.
    pub outcomes: Vec<Outcome>,
    /// The batch's sequence number (or the last one before it, if it wrote
    /// nothing): answered only once the journal is synced up to it.
    pub seq: u64,
    /// Syncs the segment the batch was written to.
    pub sync: SyncHandle,
}

impl Engine {
    /// Opens the directory in `dir` (created if missing) and recovers what
    /// the previous run committed.
    pub fn open(dir: &Path) -> Result<Engine, StoreError> {
        // The store catches redb's panics itself; this also covers what
        // runs around it (dropping a store that panicked, replay).
        quiet_panic::catch(|| Engine::open_unguarded(dir)).unwrap_or_else(|message| {
            Err(StoreError::Panicked {
                path: dir.join(DB_FILE_NAME),
                during: "starting with",
                message,
            })
        })
    }

    fn open_unguarded(dir: &Path) -> Result<Engine, StoreError> {
        let store = Store::open(dir)?;
        let segments = journal::segments(dir)?;
        // Above every segment there is now (they are deleted below) and
        // every one moved aside.
        let next = journal::next_segment_number(dir)?;
        // Everything is checked before anything is applied or deleted.
        let reads = journal::read_segments(&segments)?;
        for read in &reads {
            read.intact()?;
        }
        // The checkpointer's own step, in order: apply a segment in one
        // durable transaction, then delete it (replay is idempotent, so a
        // crash in between only replays it again).
        let mut replayed = 0;
        for read in &reads {
            replayed += store.apply_segment(read)?;
            if let Ending::TornTail { offset, flaw } = read.ending() {
                tracing::warn!(
                    path = %read.path().display(),
                    offset,
                    %flaw,
                    "journal segment ends in a torn record, dropped: its write was never acknowledged"
                );
            }
            std::fs::remove_file(read.path()).map_err(|source| JournalError::Io {
                path: read.path().to_path_buf(),
                source,
            })?;
        }
        if replayed > 0 {
            tracing::info!(
                segments = segments.len(),
                effects = replayed,
                "journal replayed"
            );
        }
        let (tables, indexes) = store.load()?;
        let mut journal = Journal::create(dir, next)?;
        let orphans = orphaned_sessions(&tables, system_clock());
        let state = Arc::new(State::new(tables, indexes));
        let mut seq = 0;
        if !orphans.is_empty() {
            // Durable before anything is served: no session of the old
            // process may still look like it holds a user.
            journal.write(&orphans)?;
            journal.sync_handle().sync()?;
            seq = 1;
            state.apply(&orphans, seq);
            state.set_durable(seq);
            tracing::info!(
                users = orphans.len() / 2,
                "users held by sessions of the previous run disconnected"
            );
        }
        let checkpointer = Checkpointer::start(store, dir).map_err(|source| JournalError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut engine = Engine {
            dir: dir.to_path_buf(),
            state,
            journal,
            checkpointer,
            segment_bytes: SEGMENT_BYTES,
            seq,
            auth: AuthMode::default(),
            clock: system_clock,
        };
        // Many held users make a large first record: hand it on like any
        // full segment.
        if engine.journal.len() >= engine.segment_bytes {
            engine.rotate();
        }
        Ok(engine)
    }

    /// Sets who may change the directory (`--auth`); call before the
    /// writer starts. The default is [`AuthMode::Open`].
    pub fn set_auth_mode(&mut self, auth: AuthMode) {
        self.auth = auth;
    }

    /// Replaces the clock that dates each batch (tests use a fixed one).
    #[cfg(test)]
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Rotates segments at `bytes` instead of [`SEGMENT_BYTES`] (tests use
    /// small segments to exercise rotation and checkpoints).
    #[cfg(test)]
    pub fn set_segment_bytes(&mut self, bytes: u64) {
        self.segment_bytes = bytes.max(1);
    }

    /// The state, for readers (it may hold staged batches not yet synced:
    /// [`crate::state`]).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Applies `mutations` in order as one batch, syncs the journal and
    /// returns their outcomes: every outcome is final, a 0 means durable.
    /// For tests; the server pipelines instead: [`Engine::stage`] in the
    /// writer, the sync in [`crate::durable::writer`]'s syncer thread.
    #[cfg(test)]
    pub fn commit<'m>(
        &mut self,
        mutations: impl IntoIterator<Item = &'m Mutation>,
    ) -> Vec<Outcome> {
        let staged = self.stage(mutations);
        match staged.sync.sync() {
            Ok(()) => {
                self.state.set_durable(staged.seq);
                staged.outcomes
            }
            Err(err) => {
                tracing::error!(error = %err, "journal sync failed; no more operations until a restart");
                self.state.fail();
                vec![Outcome::Fail; staged.outcomes.len()]
            }
        }
    }

    /// Applies `mutations` in order as one batch: the rules run against the
    /// state seen through the batch's own changes, the effects are written
    /// to the journal (not synced) and applied to the state. The outcomes
    /// may be sent only after `sync` succeeded (and nothing may be
    /// answered from the state after it failed). If the journal write fails
    /// every operation fails and nothing changes.
    pub fn stage<'m>(&mut self, mutations: impl IntoIterator<Item = &'m Mutation>) -> Staged {
        let sync = self.journal.sync_handle();
        if self.state.has_failed() {
            let outcomes = mutations.into_iter().map(|_| Outcome::Fail).collect();
            return Staged {
                outcomes,
                seq: self.seq,
                sync,
            };
        }
        let context = Context {
            auth: self.auth,
            now: (self.clock)(),
        };
        let (outcomes, effects) = {
            let tables = self.state.tables();
            let mut batch = Batch::new(&tables);
            let outcomes: Vec<Outcome> = mutations
                .into_iter()
                .map(|m| rules::apply(&mut batch, m, context))
                .collect();
            (outcomes, batch.into_effects())
        };
        if effects.is_empty() {
            // Nothing written, but the outcomes were read from the state,
            // which may hold batches not yet synced: they wait like readers.
            return Staged {
                outcomes,
                seq: self.seq,
                sync,
            };
        }
        if let Err(err) = self.journal.write(&effects) {
            tracing::error!(error = %err, ops = outcomes.len(), "journal write failed, batch failed");
            // The file's state after a failed write is unknown: continue in
            // a fresh segment (the old one keeps its whole records).
            self.rotate();
            return Staged {
                outcomes: vec![Outcome::Fail; outcomes.len()],
                seq: self.seq,
                sync,
            };
        }
        self.seq += 1;
        self.state.apply(&effects, self.seq);
        if self.journal.len() >= self.segment_bytes {
            self.rotate();
        }
        Staged {
            outcomes,
            seq: self.seq,
            sync,
        }
    }

    /// Starts a new segment and hands the finished one to the
    /// checkpointer. On failure the current segment simply grows.
    fn rotate(&mut self) {
        match self.journal.rotate() {
            Ok(finished) => self.checkpointer.segment_finished(finished),
            Err(err) => tracing::warn!(error = %err, "cannot start a new journal segment"),
        }
    }

    /// Checkpoints everything and closes the database: the next start has
    /// nothing to replay.
    pub fn close(self) -> Result<(), StoreError> {
        let Engine {
            dir,
            journal,
            checkpointer,
            ..
        } = self;
        let last = journal.number();
        let empty = journal.is_empty();
        drop(journal);
        if empty {
            // Nothing in it: no need to make the checkpointer read it.
            let path = journal::segment_path(&dir, last);
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %err, "cannot delete an empty segment");
            }
        } else {
            checkpointer.segment_finished(last);
        }
        let store = checkpointer
            .finish()
            .map_err(|_| StoreError::CheckpointerPanicked)?;
        store.close()
    }
}

/// What start-up does for users held by a session: the session died with
/// the previous process, so each is disconnected as a DISCONNECT would,
/// last seen `now`. Classic entries stay (presence probes them).
fn orphaned_sessions(tables: &crate::state::Tables, now: u64) -> Vec<Effect> {
    let mut users = tables.held_users();
    users.sort_unstable();
    users
        .into_iter()
        .flat_map(|user| {
            [
                Effect::ClearAddress(user.clone()),
                Effect::SetLastSeen { user, at: now },
            ]
        })
        .collect()
}

#[cfg(test)]
impl Engine {
    /// Stops like a crash after the last commit: the current segment is
    /// not checkpointed (segments already handed over may be). Waits for
    /// the checkpointer so that the database can be reopened.
    fn stop_without_close(self) {
        let Engine {
            journal,
            checkpointer,
            ..
        } = self;
        drop(journal);
        if let Ok(store) = checkpointer.finish() {
            drop(store);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerdex_protocol::ConnectAddr;

    fn mutation(user: &str, operation: Operation) -> Mutation {
        Mutation {
            user: user.into(),
            operation,
            peer_ip: "192.0.2.1".parse().unwrap(),
            actor: crate::actor::Actor::Classic,
            takeover: None,
        }
    }

    fn connect(port: u16) -> Operation {
        Operation::Connect(ConnectAddr {
            ip: Ok(None),
            port: Ok(port),
        })
    }

    fn publish(file: &str) -> Operation {
        Operation::Publish {
            file: Ok(file.into()),
            description: Ok(format!("about {file}")),
        }
    }

    /// The LIST_USERS body and every user's files, to compare states.
    fn dump(engine: &Engine) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
        let tables = engine.state().tables();
        let users: Vec<u8> = tables
            .connected_entries()
            .runs()
            .flatten()
            .copied()
            .collect();
        let files = tables
            .user_names()
            .into_iter()
            .map(|u| {
                let bytes = tables.file_entries(&u).runs().flatten().copied().collect();
                (u, bytes)
            })
            .collect();
        (users, files)
    }

    /// Enough batches to fill several segments, with unregisters mixed in.
    fn workload(engine: &mut Engine) {
        for round in 0..3 {
            let mut batch = Vec::new();
            for i in 0..4000 {
                let user = format!("u{i:05}");
                if round == 0 {
                    batch.push(mutation(&user, Operation::Register));
                    batch.push(mutation(&user, connect(1000 + i as u16)));
                }
                if round == 2 && i % 5 == 0 {
                    batch.push(mutation(&user, connect(2000 + i as u16)));
                }
                batch.push(mutation(&user, publish(&format!("r{round}-{i}"))));
                if round == 2 && i % 7 == 0 {
                    batch.push(mutation(&user, Operation::Unregister));
                }
                if round == 1 && i % 5 == 0 {
                    batch.push(mutation(&user, Operation::Disconnect));
                }
            }
            for chunk in batch.chunks(500) {
                let outcomes = engine.commit(chunk);
                assert!(outcomes.iter().all(|o| *o == Outcome::Ok), "{outcomes:?}");
            }
        }
    }

    /// An engine in a fresh directory with small segments, after the
    /// workload (several segments written).
    fn engine_after_workload() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = Engine::open(dir.path()).unwrap();
        engine.set_segment_bytes(64 * 1024);
        workload(&mut engine);
        (dir, engine)
    }

    #[test]
    fn state_survives_close_and_reopen() {
        let (dir, engine) = engine_after_workload();
        let before = dump(&engine);
        engine.close().unwrap();
        let found = journal::segments(dir.path()).unwrap();
        assert!(found.is_empty(), "close checkpoints everything: {found:?}");
        let engine = Engine::open(dir.path()).unwrap();
        assert_eq!(dump(&engine), before);
    }

    #[test]
    fn state_survives_a_stop_without_close() {
        let (dir, engine) = engine_after_workload();
        assert!(engine.journal.number() > 1, "the workload rotated segments");
        let before = dump(&engine);
        // No close: the current segment is never checkpointed, earlier
        // ones may or may not be; the next open replays what is left.
        engine.stop_without_close();
        assert!(!journal::segments(dir.path()).unwrap().is_empty());
        let engine = Engine::open(dir.path()).unwrap();
        assert_eq!(dump(&engine), before);
        let found = journal::segments(dir.path()).unwrap();
        assert_eq!(found.len(), 1, "only the new, empty segment: {found:?}");
    }

    #[test]
    fn the_single_journal_of_older_versions_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        // Written by an older server: one journal file, never checkpointed.
        let mut old = Journal::create(dir.path(), 1).unwrap();
        old.append(&[crate::effect::Effect::AddUser("al".into())])
            .unwrap();
        drop(old);
        std::fs::rename(
            journal::segment_path(dir.path(), 1),
            dir.path().join(journal::LEGACY_JOURNAL_NAME),
        )
        .unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        assert!(engine.state().tables().user_exists("al"));
        assert!(!dir.path().join(journal::LEGACY_JOURNAL_NAME).exists());
        engine.close().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        assert!(engine.state().tables().user_exists("al"));
    }

    /// `n` REGISTERs, each its own batch (one journal record each), then a
    /// stop like SIGKILL: everything stays in segment 1.
    fn registers_then_crash(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = Engine::open(dir.path()).unwrap();
        for i in 1..=n {
            let outcomes = engine.commit(&[mutation(&format!("u{i}"), Operation::Register)]);
            assert_eq!(outcomes, [Outcome::Ok]);
        }
        engine.stop_without_close();
        let path = journal::segment_path(dir.path(), 1);
        (dir, path)
    }

    /// Byte offsets of the records of the journal file `bytes`.
    fn record_offsets(bytes: &[u8]) -> Vec<usize> {
        let mut offsets = Vec::new();
        let mut at = journal::MAGIC.len();
        while at + 12 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            offsets.push(at);
            at += 12 + len;
        }
        offsets
    }

    /// Changes the journal at `path` with `damage` (given the file and the
    /// offset of its 50th record), opens the engine, and checks that it
    /// refuses, naming the file and the offset, and leaves the file as it
    /// was.
    fn assert_open_refuses(damage: impl FnOnce(&mut Vec<u8>, usize)) {
        let (dir, path) = registers_then_crash(100);
        let mut bytes = std::fs::read(&path).unwrap();
        let offsets = record_offsets(&bytes);
        assert_eq!(offsets.len(), 100);
        let at = offsets[49];
        damage(&mut bytes, at);
        std::fs::write(&path, &bytes).unwrap();
        let err = match Engine::open(dir.path()) {
            Ok(engine) => {
                let users = engine.state().tables().user_count();
                panic!("opened a journal damaged at offset {at}, serving {users} users");
            }
            Err(err) => err.to_string(),
        };
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(&format!("offset {at}")), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the segment was changed"
        );
    }

    #[test]
    fn a_flipped_byte_in_the_middle_stops_open_and_keeps_the_segment() {
        assert_open_refuses(|bytes, at| bytes[at + 12 + 3] ^= 0x01);
    }

    #[test]
    fn a_length_past_the_end_in_the_middle_stops_open_and_keeps_the_segment() {
        assert_open_refuses(|bytes, at| bytes[at..at + 4].copy_from_slice(&[0xff; 4]));
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_the_rest_replayed() {
        let (dir, path) = registers_then_crash(100);
        let bytes = std::fs::read(&path).unwrap();
        let last = *record_offsets(&bytes).last().unwrap();
        // The write of the last record stopped after its header: the file
        // ends there (it was being extended).
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(last as u64 + 14).unwrap();
        drop(file);
        let engine = Engine::open(dir.path()).unwrap();
        let tables = engine.state().tables();
        assert!(tables.user_exists("u99"));
        assert!(!tables.user_exists("u100"));
        assert_eq!(tables.user_count(), 99);
        drop(tables);
        assert!(!path.exists(), "a replayed segment is deleted");
    }

    /// A database made by a run with users, addresses and files, closed
    /// cleanly; its bytes.
    fn populated_database() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = Engine::open(dir.path()).unwrap();
        let mut batch = Vec::new();
        for i in 0..300u16 {
            let user = format!("u{i:03}");
            batch.push(mutation(&user, Operation::Register));
            batch.push(mutation(&user, connect(1000 + i)));
            for f in 0..3 {
                batch.push(mutation(&user, publish(&format!("file{f}.mp3"))));
            }
        }
        for chunk in batch.chunks(200) {
            engine.commit(chunk);
        }
        engine.close().unwrap();
        std::fs::read(dir.path().join(crate::durable::store::DB_FILE_NAME)).unwrap()
    }

    /// Four flipped bytes anywhere in the database: opening either works
    /// (the bytes were not in use) or fails with an error naming the
    /// file; it never panics.
    #[test]
    fn flipped_bytes_in_the_database_are_an_error_never_a_panic() {
        let db = populated_database();
        let dir = tempfile::tempdir().unwrap();
        let mut panicked = Vec::new();
        let mut refused = 0;
        let mut at = 0;
        while at + 4 <= db.len() {
            let trial = dir.path().join(format!("at-{at}"));
            std::fs::create_dir_all(&trial).unwrap();
            let path = trial.join(crate::durable::store::DB_FILE_NAME);
            let mut bytes = db.clone();
            bytes[at..at + 4].iter_mut().for_each(|b| *b ^= 0xff);
            std::fs::write(&path, &bytes).unwrap();
            match std::panic::catch_unwind(|| Engine::open(&trial)) {
                Ok(Ok(engine)) => engine.close().unwrap_or_default(),
                Ok(Err(err)) => {
                    let message = format!("{err}");
                    assert!(
                        message.contains(&path.display().to_string()),
                        "offset {at}: {message}"
                    );
                    refused += 1;
                }
                Err(_) => panicked.push(at),
            }
            std::fs::remove_dir_all(&trial).unwrap();
            // Every 64 bytes of the header pages, then a stride that is
            // not a multiple of the page size, so that each page is hit
            // at a different place.
            at += if at < 8192 { 64 } else { 509 };
        }
        assert!(
            panicked.is_empty(),
            "Engine::open panicked at offsets {panicked:?}"
        );
        assert!(refused > 0, "no flip was noticed");
    }

    #[test]
    fn readers_see_a_batch_only_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = Engine::open(dir.path()).unwrap();
        let state = engine.state().clone();
        let outcomes = engine.commit(&[
            mutation("al", Operation::Register),
            mutation("al", connect(80)),
            mutation("al", Operation::Register),
        ]);
        assert_eq!(outcomes, [Outcome::Ok, Outcome::Ok, Outcome::UsernameInUse]);
        assert!(state.tables().is_connected("al"));
        assert_eq!(
            state.tables().address("al"),
            Some("192.0.2.1:80".parse().unwrap())
        );
        // A batch with no effect writes nothing.
        let len = engine.journal.len();
        assert_eq!(
            engine.commit(&[mutation("zed", Operation::Disconnect)]),
            [Outcome::UserDoesNotExist]
        );
        assert_eq!(engine.journal.len(), len);
    }

    fn session(id: u64, credential: &str) -> crate::actor::Actor {
        crate::actor::Actor::Session(crate::actor::SessionActor {
            id,
            credential: Some(credential.into()),
            new_credential: None,
        })
    }

    /// `held` connected through session 7 with a password, `classic` by a
    /// classic CONNECT.
    fn held_and_classic(engine: &mut Engine) {
        let held = |operation| Mutation {
            actor: session(7, "$argon2id$h"),
            ..mutation("held", operation)
        };
        let outcomes = engine.commit(&[
            held(Operation::Register),
            held(connect(4000)),
            mutation("classic", Operation::Register),
            mutation("classic", connect(5000)),
        ]);
        assert!(outcomes.iter().all(|o| *o == Outcome::Ok), "{outcomes:?}");
        let tables = engine.state().tables();
        assert_eq!(tables.holder("held"), Some(7));
        assert_eq!(tables.holder("classic"), None);
    }

    /// After a restart, however the previous run ended, no user is held
    /// by a session: each was disconnected, last seen at start-up, and
    /// the account and classic entries are kept.
    fn assert_sessions_ended(engine: &Engine, started: u64) {
        let tables = engine.state().tables();
        assert_eq!(tables.holder("held"), None);
        assert!(!tables.is_connected("held"));
        let seen = tables.last_seen("held").expect("last seen recorded");
        assert!(seen >= started && seen <= system_clock(), "{seen}");
        assert_eq!(tables.credential("held").as_deref(), Some("$argon2id$h"));
        assert_eq!(
            tables.address("classic"),
            Some("192.0.2.1:5000".parse().unwrap())
        );
        assert_eq!(tables.last_seen("classic"), None);
    }

    #[test]
    fn a_restart_disconnects_the_users_sessions_held() {
        for crash in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut engine = Engine::open(dir.path()).unwrap();
            held_and_classic(&mut engine);
            if crash {
                engine.stop_without_close();
            } else {
                engine.close().unwrap();
            }
            let started = system_clock();
            let engine = Engine::open(dir.path()).unwrap();
            assert_sessions_ended(&engine, started);
            // Journaled before serving: it survives a crash right after.
            engine.stop_without_close();
            let engine = Engine::open(dir.path()).unwrap();
            assert_sessions_ended(&engine, started);
            let last_seen = engine.state().tables().last_seen("held");
            engine.close().unwrap();
            let engine = Engine::open(dir.path()).unwrap();
            assert_eq!(engine.state().tables().last_seen("held"), last_seen);
        }
    }
}
