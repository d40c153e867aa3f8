//! What this client learnt about each directory server, kept across shell
//! sessions in the user's state dir.
//!
//! Servers of the protocol family differ in two ways that cost time or
//! correctness to find out: whether they speak the peerdex extensions (a
//! classic server may never answer an op it does not know, so finding out
//! costs a short wait), and whether they read CONNECT's `IP PORT` or only a
//! port (found by checking our own entry once). Both findings are written
//! to `<state dir>/servers`, one line per server address:
//!
//! ```text
//! 127.0.0.1:8888 extensions=classic connect=port-only checked=1764787200
//! ```
//!
//! (followed by `sessions=yes|no|unknown sessions_checked=<secs>`: whether
//! it opens persistent sessions, and when that was found out; a `no` is
//! checked again like a `classic`).
//!
//! `extensions` is `peerdex`, `classic` or `unknown`; `connect` is `full`,
//! `port-only` or `unknown`; `checked` is when the extensions were last
//! found out (seconds since the epoch). A `classic` finding is trusted for
//! [`CLASSIC_RECHECK`], then checked again, so a server upgraded in place
//! is noticed. The file is only a cache: a missing, unreadable or damaged
//! one means "nothing known", and a write that fails is logged and
//! otherwise ignored. It is rewritten whole through a temporary file and a
//! rename, so a reader never sees half a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a "classic" finding is trusted before it is checked again.
pub const CLASSIC_RECHECK: Duration = Duration::from_secs(24 * 60 * 60);

/// Name of the file in the state dir.
const FILE_NAME: &str = "servers";

/// Most servers remembered: a bound on the file, whatever writes it.
const MAX_ENTRIES: usize = 1000;

/// Whether a server speaks the peerdex extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Extensions {
    #[default]
    Unknown,
    Peerdex,
    Classic,
}

/// Whether a server opens persistent sessions (PROTOCOL-EXTENSIONS.md,
/// "Accounts and sessions").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sessions {
    #[default]
    Unknown,
    Yes,
    /// A close, silence or garbage answered the preface: classic connections.
    No,
}

/// Which form of CONNECT a server reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectForm {
    #[default]
    Unknown,
    /// `IP`, `PORT`: what PROTOCOL.md describes first.
    Full,
    /// Only `PORT`, the source address being the IP.
    PortOnly,
}

/// Everything known about one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Profile {
    pub extensions: Extensions,
    pub connect: ConnectForm,
    /// When `extensions` was found out, in seconds since the epoch.
    pub checked: u64,
    pub sessions: Sessions,
    /// When `sessions` was found out, in seconds since the epoch.
    pub sessions_checked: u64,
}

impl Profile {
    /// The extension finding to start a session with: a classic finding
    /// older than [`CLASSIC_RECHECK`] is checked again.
    pub fn extensions_now(&self, now: u64) -> Extensions {
        match self.extensions {
            Extensions::Classic if now.saturating_sub(self.checked) > CLASSIC_RECHECK.as_secs() => {
                Extensions::Unknown
            }
            found => found,
        }
    }

    /// The session finding to start with: a "no" older than
    /// [`CLASSIC_RECHECK`] is checked again, so that a server upgraded in
    /// place gets sessions.
    pub fn sessions_now(&self, now: u64) -> Sessions {
        match self.sessions {
            Sessions::No
                if now.saturating_sub(self.sessions_checked) > CLASSIC_RECHECK.as_secs() =>
            {
                Sessions::Unknown
            }
            found => found,
        }
    }
}

/// The profile of one server, shared by everything in a shell that talks
/// to it, and written back to the state dir when it changes.
#[derive(Debug, Clone)]
pub struct ServerProfile {
    /// `host:port` as the user gave it.
    key: String,
    /// The state dir's file; `None` keeps findings in memory only.
    file: Option<PathBuf>,
    /// What is known now.
    profile: Arc<Mutex<Profile>>,
}

impl ServerProfile {
    /// The profile of `key` from the file in `state_dir` (nothing known when
    /// there is none).
    pub fn load(state_dir: Option<&Path>, key: &str) -> ServerProfile {
        let file = state_dir.map(|dir| dir.join(FILE_NAME));
        let profile = file
            .as_deref()
            .and_then(|f| read_entries(f).remove(key))
            .unwrap_or_default();
        ServerProfile {
            key: key.to_string(),
            file,
            profile: Arc::new(Mutex::new(profile)),
        }
    }

    /// A profile kept in memory only.
    #[cfg(test)]
    pub fn in_memory(key: &str) -> ServerProfile {
        Self::load(None, key)
    }

    /// What is known now.
    pub fn get(&self) -> Profile {
        *self.profile.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records whether the server speaks the extensions.
    pub fn set_extensions(&self, extensions: Extensions) {
        self.update(|p| {
            p.extensions = extensions;
            p.checked = now_secs();
        });
    }

    /// Records whether the server opens sessions.
    pub fn set_sessions(&self, sessions: Sessions) {
        if self.get().sessions == sessions {
            return;
        }
        self.update(|p| {
            p.sessions = sessions;
            p.sessions_checked = now_secs();
        });
    }

    /// Records which CONNECT form the server reads.
    pub fn set_connect(&self, connect: ConnectForm) {
        self.update(|p| p.connect = connect);
    }

    fn update(&self, change: impl FnOnce(&mut Profile)) {
        let profile = {
            let mut profile = self.profile.lock().unwrap_or_else(PoisonError::into_inner);
            change(&mut profile);
            *profile
        };
        let Some(file) = &self.file else { return };
        if let Err(err) = write_entry(file, &self.key, profile) {
            tracing::warn!(path = %file.display(), error = %err, "cannot remember what this server speaks");
        }
    }
}

/// Seconds since the epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The default state dir: `$XDG_STATE_HOME/peerdex`, else
/// `$HOME/.local/state/peerdex`; `None` when neither is set.
pub fn default_state_dir() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(state) = non_empty("XDG_STATE_HOME") {
        return Some(PathBuf::from(state).join("peerdex"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".local/state/peerdex"))
}

/// Every well-formed line of the file; anything else is skipped.
fn read_entries(file: &Path) -> BTreeMap<String, Profile> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(parse_line)
        .take(MAX_ENTRIES)
        .collect()
}

fn parse_line(line: &str) -> Option<(String, Profile)> {
    let mut words = line.split_whitespace();
    let key = words.next()?.to_string();
    let mut profile = Profile::default();
    for word in words {
        match word.split_once('=')? {
            ("extensions", "peerdex") => profile.extensions = Extensions::Peerdex,
            ("extensions", "classic") => profile.extensions = Extensions::Classic,
            ("extensions", _) => profile.extensions = Extensions::Unknown,
            ("connect", "full") => profile.connect = ConnectForm::Full,
            ("connect", "port-only") => profile.connect = ConnectForm::PortOnly,
            ("connect", _) => profile.connect = ConnectForm::Unknown,
            ("checked", secs) => profile.checked = secs.parse().ok()?,
            ("sessions", "yes") => profile.sessions = Sessions::Yes,
            ("sessions", "no") => profile.sessions = Sessions::No,
            ("sessions", _) => profile.sessions = Sessions::Unknown,
            ("sessions_checked", secs) => profile.sessions_checked = secs.parse().ok()?,
            _ => {}
        }
    }
    Some((key, profile))
}

fn format_line(key: &str, profile: &Profile) -> String {
    let extensions = match profile.extensions {
        Extensions::Unknown => "unknown",
        Extensions::Peerdex => "peerdex",
        Extensions::Classic => "classic",
    };
    let connect = match profile.connect {
        ConnectForm::Unknown => "unknown",
        ConnectForm::Full => "full",
        ConnectForm::PortOnly => "port-only",
    };
    let sessions = match profile.sessions {
        Sessions::Unknown => "unknown",
        Sessions::Yes => "yes",
        Sessions::No => "no",
    };
    format!(
        "{key} extensions={extensions} connect={connect} checked={} sessions={sessions} sessions_checked={}",
        profile.checked, profile.sessions_checked
    )
}

/// Rewrites the file with `key`'s entry replaced, keeping the others as
/// they are on disk now (another shell may have added some).
fn write_entry(file: &Path, key: &str, profile: Profile) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut entries = read_entries(file);
    entries.insert(key.to_string(), profile);
    while entries.len() > MAX_ENTRIES {
        // Forget the entry checked longest ago.
        let oldest = entries
            .iter()
            .min_by_key(|(_, p)| p.checked)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => entries.remove(&k),
            None => break,
        };
    }
    let mut text = String::from("# what peerdex learnt about directory servers; safe to delete\n");
    for (key, profile) in &entries {
        text.push_str(&format_line(key, profile));
        text.push('\n');
    }
    let temp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(temp.path(), text)?;
    temp.persist(file).map_err(|err| err.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_survive_a_new_session_and_other_servers_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = ServerProfile::load(Some(dir.path()), "127.0.0.1:1");
        assert_eq!(a.get(), Profile::default());
        a.set_extensions(Extensions::Classic);
        a.set_connect(ConnectForm::PortOnly);
        let b = ServerProfile::load(Some(dir.path()), "127.0.0.1:2");
        b.set_extensions(Extensions::Peerdex);
        let again = ServerProfile::load(Some(dir.path()), "127.0.0.1:1").get();
        assert_eq!(again.extensions, Extensions::Classic);
        assert_eq!(again.connect, ConnectForm::PortOnly);
        let other = ServerProfile::load(Some(dir.path()), "127.0.0.1:2").get();
        assert_eq!(other.extensions, Extensions::Peerdex);
        assert_eq!(other.connect, ConnectForm::Unknown);
    }

    #[test]
    fn an_old_classic_finding_is_checked_again() {
        let profile = Profile {
            extensions: Extensions::Classic,
            connect: ConnectForm::Full,
            checked: 1_000,
            ..Profile::default()
        };
        assert_eq!(profile.extensions_now(1_000 + 60), Extensions::Classic);
        let later = 1_000 + CLASSIC_RECHECK.as_secs() + 1;
        assert_eq!(profile.extensions_now(later), Extensions::Unknown);
        let peerdex = Profile {
            extensions: Extensions::Peerdex,
            ..profile
        };
        assert_eq!(peerdex.extensions_now(later), Extensions::Peerdex);
    }

    #[test]
    fn the_session_finding_survives_and_an_old_no_is_checked_again() {
        let dir = tempfile::tempdir().unwrap();
        let a = ServerProfile::load(Some(dir.path()), "h:1");
        a.set_sessions(Sessions::No);
        a.set_extensions(Extensions::Peerdex);
        let again = ServerProfile::load(Some(dir.path()), "h:1").get();
        assert_eq!(again.sessions, Sessions::No);
        assert_eq!(again.extensions, Extensions::Peerdex);
        let now = again.sessions_checked;
        assert_eq!(again.sessions_now(now), Sessions::No);
        let later = now + CLASSIC_RECHECK.as_secs() + 1;
        assert_eq!(again.sessions_now(later), Sessions::Unknown);
        a.set_sessions(Sessions::Yes);
        assert_eq!(
            ServerProfile::load(Some(dir.path()), "h:1")
                .get()
                .sessions_now(later),
            Sessions::Yes
        );
        // A line from before sessions: nothing known about them.
        std::fs::write(
            dir.path().join(FILE_NAME),
            "h:2 extensions=peerdex connect=full checked=5\n",
        )
        .unwrap();
        let old = ServerProfile::load(Some(dir.path()), "h:2").get();
        assert_eq!(old.sessions, Sessions::Unknown);
        assert_eq!(old.extensions, Extensions::Peerdex);
    }

    #[test]
    fn a_damaged_file_means_nothing_known() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            "garbage\n\u{0}\u{1}\nh:1 extensions=classic checked=notanumber\nh:2 connect=port-only\n",
        )
        .unwrap();
        assert_eq!(
            ServerProfile::load(Some(dir.path()), "h:1").get(),
            Profile::default()
        );
        assert_eq!(
            ServerProfile::load(Some(dir.path()), "h:2").get().connect,
            ConnectForm::PortOnly
        );
        // An unwritable state dir only loses the memory.
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"x").unwrap();
        let profile = ServerProfile::load(Some(&blocked), "h:3");
        profile.set_extensions(Extensions::Peerdex);
        assert_eq!(profile.get().extensions, Extensions::Peerdex);
    }
}
