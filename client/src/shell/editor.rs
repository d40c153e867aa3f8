//! The interactive line editor: rustyline with history, tab completion of
//! command and user names, and usage hints.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::{Hint, Hinter};
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};

use super::command::{find_spec, SPECS};

/// The editor type of the shell.
pub type ShellEditor = Editor<ShellHelper, DefaultHistory>;

/// Builds the editor with its helper. `known_users` is filled by the session
/// from LIST_USERS replies.
pub fn new_editor(known_users: Arc<Mutex<Vec<String>>>) -> rustyline::Result<ShellEditor> {
    let config = Config::builder()
        .auto_add_history(false)
        .history_ignore_dups(true)?
        .history_ignore_space(true)
        .completion_type(CompletionType::List)
        .build();
    let mut editor = ShellEditor::with_config(config)?;
    editor.set_helper(Some(ShellHelper { known_users }));
    Ok(editor)
}

/// The history file: `--history`, else `$HOME/.peerdex_history`, else none.
pub fn history_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| {
        std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map(|home| PathBuf::from(home).join(".peerdex_history"))
    })
}

/// Completion, hints and hint colouring for the shell.
pub struct ShellHelper {
    /// User names of the last LIST_USERS reply.
    known_users: Arc<Mutex<Vec<String>>>,
}

/// A usage hint: shown greyed, never inserted by the right arrow key.
pub struct UsageHint(String);

impl Hint for UsageHint {
    fn display(&self) -> &str {
        &self.0
    }

    fn completion(&self) -> Option<&str> {
        None
    }
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let users = self
            .known_users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(complete(&line[..pos], &users))
    }
}

/// Completion of the word that ends `before` (the line up to the cursor):
/// command names case-insensitively as the first word, then user names
/// for commands whose first argument is a user.
pub fn complete(before: &str, users: &[String]) -> (usize, Vec<String>) {
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map_or(0, |(i, c)| i + c.len_utf8());
    let word = &before[start..];
    let previous: Vec<&str> = before[..start].split_whitespace().collect();
    let candidates = match previous[..] {
        [] => SPECS
            .iter()
            .filter(|spec| starts_with_ignore_case(spec.name, word))
            .map(|spec| format!("{} ", spec.name))
            .collect(),
        [command] if find_spec(command).is_some_and(|spec| spec.first_arg_is_user) => {
            let mut names: Vec<String> = users
                .iter()
                .filter(|name| name.starts_with(word))
                .map(|name| format!("{name} "))
                .collect();
            names.sort();
            names.dedup();
            names
        }
        _ => Vec::new(),
    };
    (start, candidates)
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.is_char_boundary(prefix.len())
        && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

impl Hinter for ShellHelper {
    type Hint = UsageHint;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<UsageHint> {
        if pos < line.len() {
            return None;
        }
        usage_hint(line).map(UsageHint)
    }
}

/// The rest of the usage of the command being typed.
pub fn usage_hint(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let first = *words.first()?;
    let after_blank = line.ends_with(char::is_whitespace);
    if words.len() == 1 && !after_blank {
        let spec = match find_spec(first) {
            Some(spec) => spec,
            None => {
                let mut matching = SPECS
                    .iter()
                    .filter(|spec| starts_with_ignore_case(spec.name, first));
                match (matching.next(), matching.next()) {
                    (Some(spec), None) => spec,
                    _ => return None,
                }
            }
        };
        let rest_of_name = &spec.name[first.len()..];
        let hint = if spec.args.is_empty() {
            rest_of_name.to_string()
        } else {
            format!("{rest_of_name} {}", spec.args)
        };
        return (!hint.is_empty()).then_some(hint);
    }
    let spec = find_spec(first)?;
    let args: Vec<&str> = spec.args.split_whitespace().collect();
    let typed = words.len() - 1;
    let rest = args
        .get(typed.min(args.len())..)
        .unwrap_or_default()
        .join(" ");
    if rest.is_empty() {
        None
    } else if after_blank {
        Some(rest)
    } else {
        Some(format!(" {rest}"))
    }
}

impl Highlighter for ShellHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        Cow::Owned(format!("\x1b[90m{hint}\x1b[0m"))
    }
}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_command_names_case_insensitively() {
        assert_eq!(complete("reg", &[]), (0, vec!["REGISTER ".to_string()]));
        let (start, list) = complete("LIST", &[]);
        assert_eq!(start, 0);
        assert_eq!(list, ["LIST_USERS ", "LIST_CONTENT "]);
        assert!(complete("zz", &[]).1.is_empty());
    }

    #[test]
    fn completes_user_names_for_user_arguments() {
        let users = vec!["alice".to_string(), "albert".to_string(), "bob".to_string()];
        assert_eq!(
            complete("connect al", &users),
            (8, vec!["albert ".to_string(), "alice ".to_string()])
        );
        assert_eq!(complete("GET_FILE b", &users).1, ["bob "]);
        assert!(complete("PUBLISH a", &users).1.is_empty());
        assert!(complete("GET_FILE bob a", &users).1.is_empty());
    }

    #[test]
    fn hints_show_the_rest_of_the_usage() {
        assert_eq!(usage_hint("REGI").as_deref(), Some("STER <user>"));
        assert_eq!(usage_hint("register").as_deref(), Some(" <user>"));
        assert_eq!(usage_hint("register ").as_deref(), Some("<user>"));
        assert_eq!(usage_hint("register al"), None);
        assert_eq!(
            usage_hint("GET_FILE bob ").as_deref(),
            Some("<remote_file> <local_file>")
        );
        assert_eq!(
            usage_hint("get_file bob").as_deref(),
            Some(" <remote_file> <local_file>")
        );
        assert_eq!(usage_hint("LIST_USERS"), None);
        assert_eq!(usage_hint("LIST"), None);
        assert_eq!(usage_hint(""), None);
    }

    #[test]
    fn history_defaults_to_home() {
        let explicit = history_path(Some(PathBuf::from("/tmp/h")));
        assert_eq!(explicit, Some(PathBuf::from("/tmp/h")));
    }
}
