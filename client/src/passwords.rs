//! Where the shell's passwords come from, never the command line.
//!
//! A login password is, in order: one typed or set earlier in this shell
//! for that user; the first line of `--password-file`; `PEERDEX_PASSWORD`;
//! else empty (an account without a password, as a classic client has).
//! On a terminal the user is asked without echo (`rpassword`): for a new
//! password at REGISTER (twice, empty for none) and PASSWD (twice), and
//! once more when a login with the empty password is refused. A piped
//! PASSWD takes the new password from `--new-password-file` or
//! `PEERDEX_NEW_PASSWORD`. Passwords stay [`Secret`]s: nothing here prints,
//! logs or writes one.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use peerdex_protocol::Secret;
use thiserror::Error;

/// The environment variable of the login password.
pub const PASSWORD_ENV: &str = "PEERDEX_PASSWORD";
/// The environment variable of PASSWD's new password.
pub const NEW_PASSWORD_ENV: &str = "PEERDEX_NEW_PASSWORD";
/// Most bytes read of a password file: a password is one field (255 bytes).
const MAX_FILE_READ: u64 = 4096;

/// Why no password could be had.
#[derive(Debug, Error)]
pub enum PasswordError {
    #[error("cannot read the password file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("cannot read a password from the terminal: {0}")]
    Prompt(String),
    #[error("the passwords do not match")]
    Mismatch,
    #[error("the new password is empty")]
    Empty,
    #[error("no new password: give --new-password-file FILE or set {NEW_PASSWORD_ENV}")]
    NoNewPassword,
}

/// Asks the person at the terminal, without echo.
pub trait Prompter: Send + Sync {
    fn ask(&self, prompt: &str) -> std::io::Result<String>;
}

/// The real terminal.
struct Terminal;

impl Prompter for Terminal {
    fn ask(&self, prompt: &str) -> std::io::Result<String> {
        rpassword::prompt_password(prompt)
    }
}

/// The sources of one shell's passwords.
pub struct Passwords {
    /// Asks at the terminal; `None` when stdin is not one.
    prompter: Option<Arc<dyn Prompter>>,
    file: Option<PathBuf>,
    env: Option<Secret>,
    new_file: Option<PathBuf>,
    new_env: Option<Secret>,
    /// Passwords typed or set in this shell, by user.
    known: Mutex<HashMap<String, Secret>>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("terminal", &self.prompter.is_some())
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Passwords {
    /// The sources of a shell: `tty` when stdin is a terminal, the files
    /// given on the command line, and the environment.
    pub fn from_env(tty: bool, file: Option<PathBuf>, new_file: Option<PathBuf>) -> Self {
        let var =
            |name| std::env::var_os(name).map(|v| Secret::new(v.to_string_lossy().into_owned()));
        Self::new(
            tty.then(|| Arc::new(Terminal) as Arc<dyn Prompter>),
            file,
            var(PASSWORD_ENV),
            new_file,
            var(NEW_PASSWORD_ENV),
        )
    }

    /// Only empty passwords: what a shell with no source at all uses.
    #[cfg(test)]
    pub fn none() -> Self {
        Self::new(None, None, None, None, None)
    }

    pub fn new(
        prompter: Option<Arc<dyn Prompter>>,
        file: Option<PathBuf>,
        env: Option<Secret>,
        new_file: Option<PathBuf>,
        new_env: Option<Secret>,
    ) -> Self {
        Self {
            prompter,
            file,
            env,
            new_file,
            new_env,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The password to log `user` in with.
    pub fn login(&self, user: &str) -> Result<Secret, PasswordError> {
        if let Some(known) = self.lock().get(user) {
            return Ok(known.clone());
        }
        if let Some(file) = &self.file {
            return first_line(file);
        }
        Ok(self.env.clone().unwrap_or_default())
    }

    /// Remembers `user`'s password for the next logins of this shell.
    pub fn remember(&self, user: &str, password: Secret) {
        self.lock().insert(user.to_string(), password);
    }

    /// Asks for `user`'s password once (after a refused empty login).
    pub async fn prompt_login(&self, user: &str) -> Result<Option<Secret>, PasswordError> {
        let Some(prompter) = &self.prompter else {
            return Ok(None);
        };
        ask(prompter, format!("password for {user}: "))
            .await
            .map(Some)
    }

    /// The password a REGISTER on a terminal creates the account with
    /// (asked twice, empty for none); `None` off a terminal, where the
    /// login password is used.
    pub async fn new_for_register(&self, user: &str) -> Result<Option<Secret>, PasswordError> {
        let Some(prompter) = &self.prompter else {
            return Ok(None);
        };
        let first = ask(
            prompter,
            format!("new password for {user} (empty for none): "),
        )
        .await?;
        if first.is_empty() {
            return Ok(Some(first));
        }
        let again = ask(prompter, "again: ".to_string()).await?;
        if again != first {
            return Err(PasswordError::Mismatch);
        }
        Ok(Some(first))
    }

    /// PASSWD's new password: asked twice on a terminal, else from
    /// `--new-password-file` or `PEERDEX_NEW_PASSWORD`; never empty.
    pub async fn new_for_passwd(&self, user: &str) -> Result<Secret, PasswordError> {
        let password = if let Some(prompter) = &self.prompter {
            let first = ask(prompter, format!("new password for {user}: ")).await?;
            let again = ask(prompter, "again: ".to_string()).await?;
            if again != first {
                return Err(PasswordError::Mismatch);
            }
            first
        } else if let Some(file) = &self.new_file {
            first_line(file)?
        } else {
            self.new_env.clone().ok_or(PasswordError::NoNewPassword)?
        };
        if password.is_empty() {
            return Err(PasswordError::Empty);
        }
        Ok(password)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Secret>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Asks on a blocking thread (the prompt reads the terminal).
async fn ask(prompter: &Arc<dyn Prompter>, prompt: String) -> Result<Secret, PasswordError> {
    let prompter = Arc::clone(prompter);
    match tokio::task::spawn_blocking(move || prompter.ask(&prompt)).await {
        Ok(Ok(text)) => Ok(Secret::new(text)),
        Ok(Err(err)) => Err(PasswordError::Prompt(err.to_string())),
        Err(err) => Err(PasswordError::Prompt(err.to_string())),
    }
}

/// The first line of `path`, without its line end.
fn first_line(path: &Path) -> Result<Secret, PasswordError> {
    let failed = |err: std::io::Error| PasswordError::File {
        path: path.display().to_string(),
        reason: crate::directory_client::describe_io(&err),
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_READ).read_to_end(&mut bytes))
        .map_err(failed)?;
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = String::from_utf8(line.to_vec()).map_err(|_| PasswordError::File {
        path: path.display().to_string(),
        reason: "not UTF-8".into(),
    })?;
    Ok(Secret::new(text))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Answers prompts from a script and records the prompts.
    pub(crate) struct Scripted {
        answers: Mutex<Vec<&'static str>>,
        pub(crate) asked: Mutex<Vec<String>>,
    }

    impl Scripted {
        pub(crate) fn new(answers: &[&'static str]) -> Arc<Self> {
            Arc::new(Self {
                answers: Mutex::new(answers.iter().rev().copied().collect()),
                asked: Mutex::new(Vec::new()),
            })
        }
    }

    impl Prompter for Scripted {
        fn ask(&self, prompt: &str) -> std::io::Result<String> {
            self.asked.lock().unwrap().push(prompt.to_string());
            self.answers
                .lock()
                .unwrap()
                .pop()
                .map(str::to_string)
                .ok_or_else(|| std::io::Error::other("no more answers"))
        }
    }

    #[test]
    fn the_login_password_comes_from_the_file_then_the_env_then_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\r\nsecond line\n").unwrap();
        let env = Some(Secret::new("from-env"));
        let with_file = Passwords::new(None, Some(file.clone()), env.clone(), None, None);
        assert_eq!(with_file.login("al").unwrap().expose(), "s3cret");
        let with_env = Passwords::new(None, None, env, None, None);
        assert_eq!(with_env.login("al").unwrap().expose(), "from-env");
        assert!(Passwords::none().login("al").unwrap().is_empty());
        // One set in this shell wins, for that user only.
        with_env.remember("al", Secret::new("typed"));
        assert_eq!(with_env.login("al").unwrap().expose(), "typed");
        assert_eq!(with_env.login("bo").unwrap().expose(), "from-env");
        let missing = Passwords::new(None, Some(dir.path().join("nope")), None, None, None);
        assert!(matches!(
            missing.login("al"),
            Err(PasswordError::File { .. })
        ));
        std::fs::write(&file, "no newline").unwrap();
        assert_eq!(with_file.login("al").unwrap().expose(), "no newline");
    }

    #[tokio::test]
    async fn register_asks_twice_on_a_terminal_and_allows_none() {
        let prompter = Scripted::new(&["pw", "pw", "", "a", "b"]);
        let passwords = Passwords::new(Some(prompter.clone()), None, None, None, None);
        let first = passwords.new_for_register("al").await.unwrap().unwrap();
        assert_eq!(first.expose(), "pw");
        let none = passwords.new_for_register("al").await.unwrap().unwrap();
        assert!(none.is_empty(), "empty for none: asked once");
        assert!(matches!(
            passwords.new_for_register("al").await,
            Err(PasswordError::Mismatch)
        ));
        let asked = prompter.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 5);
        assert!(asked[0].contains("empty for none"));
        // Off a terminal: nothing asked, the login source is used.
        assert!(Passwords::none()
            .new_for_register("al")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn passwd_takes_the_new_password_from_its_own_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("new");
        std::fs::write(&file, "newpw\n").unwrap();
        let piped = Passwords::new(None, None, None, Some(file), Some(Secret::new("env")));
        assert_eq!(piped.new_for_passwd("al").await.unwrap().expose(), "newpw");
        let env = Passwords::new(None, None, None, None, Some(Secret::new("env")));
        assert_eq!(env.new_for_passwd("al").await.unwrap().expose(), "env");
        assert!(matches!(
            Passwords::none().new_for_passwd("al").await,
            Err(PasswordError::NoNewPassword)
        ));
        let empty = Passwords::new(None, None, None, None, Some(Secret::new("")));
        assert!(matches!(
            empty.new_for_passwd("al").await,
            Err(PasswordError::Empty)
        ));
        let tty = Passwords::new(Some(Scripted::new(&["x", "y"])), None, None, None, None);
        assert!(matches!(
            tty.new_for_passwd("al").await,
            Err(PasswordError::Mismatch)
        ));
    }

    #[test]
    fn nothing_shows_a_password() {
        let passwords = Passwords::new(None, None, Some(Secret::new("hunter2")), None, None);
        assert!(!format!("{passwords:?}").contains("hunter2"));
    }
}
