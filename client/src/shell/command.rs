//! Parsing one shell line into a [`Command`].
//!
//! Command names are case-insensitive; arguments are kept as typed. The
//! [`SPECS`] table is the single source of command names and usages: the
//! parser, `HELP`, tab completion and hints all read it.

use thiserror::Error;

/// What the shell knows about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The command name, upper case.
    pub name: &'static str,
    /// The arguments as shown in usage lines (empty when none).
    pub args: &'static str,
    /// True when the first argument is a user name (for completion).
    pub first_arg_is_user: bool,
    /// One-line description for `HELP`.
    pub help: &'static str,
}

impl Spec {
    /// `NAME <args>`, as printed in usage errors and `HELP`.
    pub fn usage(&self) -> String {
        if self.args.is_empty() {
            self.name.to_string()
        } else {
            format!("{} {}", self.name, self.args)
        }
    }
}

const fn spec(
    name: &'static str,
    args: &'static str,
    first_arg_is_user: bool,
    help: &'static str,
) -> Spec {
    Spec {
        name,
        args,
        first_arg_is_user,
        help,
    }
}

/// Every command of the shell, in PROTOCOL.md's order.
pub const SPECS: [Spec; 15] = [
    spec("REGISTER", "<user>", true, "create a user in the directory"),
    spec(
        "UNREGISTER",
        "<user>",
        true,
        "remove a user and its content",
    ),
    spec(
        "CONNECT",
        "<user>",
        true,
        "go online as <user> and serve its files",
    ),
    spec(
        "PUBLISH",
        "<file> <description...>",
        false,
        "publish a file of the share dir",
    ),
    spec("DELETE", "<file>", false, "withdraw a published file"),
    spec("LIST_USERS", "", false, "list the connected users"),
    spec(
        "LIST_CONTENT",
        "<user>",
        true,
        "list the files a user published",
    ),
    spec(
        "DISCONNECT",
        "<user>",
        true,
        "go offline and stop serving files",
    ),
    spec(
        "GET_FILE",
        "<user> <remote_file> <local_file>",
        true,
        "download a file from a connected peer",
    ),
    spec(
        "SHARE",
        "<dir> [description...]",
        false,
        "publish every file under a directory of the share dir",
    ),
    spec(
        "SEARCH",
        "<pattern>",
        false,
        "find files of all users by name (substring, * and ?; first 100)",
    ),
    spec(
        "WHOIS",
        "<user>",
        true,
        "show whether a user is online, or when it was last seen",
    ),
    spec(
        "PASSWD",
        "",
        false,
        "set a new password for the current user (asked, never typed here)",
    ),
    spec("QUIT", "", false, "disconnect and leave the shell"),
    spec("HELP", "", false, "show this list"),
];

/// Finds a command by name, case-insensitively.
pub fn find_spec(name: &str) -> Option<&'static Spec> {
    SPECS
        .iter()
        .find(|spec| spec.name.eq_ignore_ascii_case(name))
}

/// The lines `HELP` prints: every command with its usage.
pub fn help_lines() -> Vec<String> {
    let width = SPECS.iter().map(|s| s.usage().len()).max().unwrap_or(0);
    std::iter::once("Commands (names are case-insensitive):".to_string())
        .chain(
            SPECS
                .iter()
                .map(|s| format!("  {:width$}  {}", s.usage(), s.help)),
        )
        .collect()
}

/// One parsed shell command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Register(String),
    Unregister(String),
    Connect(String),
    Publish {
        file: String,
        description: String,
    },
    Delete(String),
    ListUsers,
    ListContent(String),
    Disconnect(String),
    GetFile {
        user: String,
        remote_file: String,
        local_file: String,
    },
    /// peerdex: publish every eligible file under `dir`.
    Share {
        dir: String,
        description: Option<String>,
    },
    /// peerdex: file names of all users containing `pattern`
    /// ([`SEARCH_LIMIT`] results at most).
    Search(String),
    /// peerdex: whether a user is online, or when it was last seen.
    Whois(String),
    /// peerdex: a new password for the current user (never an argument).
    Passwd,
    Quit,
    Help,
}

/// Results SEARCH asks for; the directory reports the total beyond it.
pub const SEARCH_LIMIT: u32 = 100;

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Known command, wrong number of arguments.
    #[error("Syntax error. Usage: {}", .0.usage())]
    Usage(&'static Spec),
    /// No such command.
    #[error("unknown command {0} (type HELP)")]
    Unknown(String),
}

/// Parses a line. A blank line is `Ok(None)`.
pub fn parse(line: &str) -> Result<Option<Command>, ParseError> {
    let line = line.trim();
    let Some((name, rest)) = split_word(line) else {
        return Ok(None);
    };
    let spec = find_spec(name).ok_or_else(|| ParseError::Unknown(name.to_string()))?;
    let usage = || ParseError::Usage(spec);
    let args: Vec<&str> = rest.split_whitespace().collect();
    let one = |args: &[&str]| match args {
        [arg] => Ok(arg.to_string()),
        _ => Err(usage()),
    };
    let none = |args: &[&str]| {
        if args.is_empty() {
            Ok(())
        } else {
            Err(usage())
        }
    };
    let command = match spec.name {
        "REGISTER" => Command::Register(one(&args)?),
        "UNREGISTER" => Command::Unregister(one(&args)?),
        "CONNECT" => Command::Connect(one(&args)?),
        "DISCONNECT" => Command::Disconnect(one(&args)?),
        "DELETE" => Command::Delete(one(&args)?),
        "LIST_CONTENT" => Command::ListContent(one(&args)?),
        "SEARCH" => Command::Search(one(&args)?),
        "WHOIS" => Command::Whois(one(&args)?),
        "PASSWD" => none(&args).map(|()| Command::Passwd)?,
        "LIST_USERS" => none(&args).map(|()| Command::ListUsers)?,
        "QUIT" => none(&args).map(|()| Command::Quit)?,
        "HELP" => none(&args).map(|()| Command::Help)?,
        "PUBLISH" => {
            let (file, description) = split_word(rest).ok_or_else(usage)?;
            Command::Publish {
                file: file.to_string(),
                description: description.trim().to_string(),
            }
        }
        "SHARE" => {
            let (dir, description) = split_word(rest).ok_or_else(usage)?;
            let description = description.trim();
            Command::Share {
                dir: dir.to_string(),
                description: (!description.is_empty()).then(|| description.to_string()),
            }
        }
        "GET_FILE" => match args[..] {
            [user, remote_file, local_file] => Command::GetFile {
                user: user.to_string(),
                remote_file: remote_file.to_string(),
                local_file: local_file.to_string(),
            },
            _ => return Err(usage()),
        },
        other => unreachable!("command {other} is in SPECS but not parsed"),
    };
    Ok(Some(command))
}

/// Splits off the first whitespace-separated word; `None` when there is none.
fn split_word(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    Some(match text.find(char::is_whitespace) {
        Some(end) => (&text[..end], &text[end..]),
        None => (text, ""),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_line(line: &str) -> String {
        parse(line).unwrap_err().to_string()
    }

    #[test]
    fn whois_and_passwd() {
        assert_eq!(parse("whois bo"), Ok(Some(Command::Whois("bo".into()))));
        assert_eq!(parse("PASSWD"), Ok(Some(Command::Passwd)));
        assert_eq!(usage_line("WHOIS"), "Syntax error. Usage: WHOIS <user>");
        // A password is never an argument.
        assert_eq!(usage_line("PASSWD hunter2"), "Syntax error. Usage: PASSWD");
        assert!(help_lines().iter().any(|l| l.contains("WHOIS <user>")));
        assert!(find_spec("whois").unwrap().first_arg_is_user);
    }

    #[test]
    fn blank_lines_are_nothing() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("   \t "), Ok(None));
    }

    #[test]
    fn names_are_case_insensitive_arguments_are_not() {
        assert_eq!(
            parse("register Alice"),
            Ok(Some(Command::Register("Alice".into())))
        );
        assert_eq!(
            parse("  Connect  Bob  "),
            Ok(Some(Command::Connect("Bob".into())))
        );
        assert_eq!(parse("list_users"), Ok(Some(Command::ListUsers)));
        assert_eq!(parse("QuIt"), Ok(Some(Command::Quit)));
        assert_eq!(parse("help"), Ok(Some(Command::Help)));
    }

    #[test]
    fn every_one_argument_command() {
        assert_eq!(
            parse("UNREGISTER a"),
            Ok(Some(Command::Unregister("a".into())))
        );
        assert_eq!(
            parse("DISCONNECT a"),
            Ok(Some(Command::Disconnect("a".into())))
        );
        assert_eq!(
            parse("DELETE f.txt"),
            Ok(Some(Command::Delete("f.txt".into())))
        );
        assert_eq!(
            parse("LIST_CONTENT a"),
            Ok(Some(Command::ListContent("a".into())))
        );
    }

    #[test]
    fn publish_takes_the_rest_of_the_line_as_description() {
        assert_eq!(
            parse("PUBLISH song.mp3   a  very good song "),
            Ok(Some(Command::Publish {
                file: "song.mp3".into(),
                description: "a  very good song".into()
            }))
        );
        assert_eq!(
            parse("publish f"),
            Ok(Some(Command::Publish {
                file: "f".into(),
                description: String::new()
            }))
        );
        assert_eq!(
            usage_line("PUBLISH"),
            "Syntax error. Usage: PUBLISH <file> <description...>"
        );
    }

    #[test]
    fn search_takes_one_pattern() {
        assert_eq!(
            parse("search F1*2"),
            Ok(Some(Command::Search("F1*2".into())))
        );
        let usage = "Syntax error. Usage: SEARCH <pattern>";
        assert_eq!(usage_line("SEARCH"), usage);
        assert_eq!(usage_line("SEARCH a b"), usage);
        assert!(help_lines().iter().any(|l| l.contains("SEARCH <pattern>")));
    }

    #[test]
    fn get_file_takes_three_arguments() {
        assert_eq!(
            parse("GET_FILE bob a.txt /tmp/b.txt"),
            Ok(Some(Command::GetFile {
                user: "bob".into(),
                remote_file: "a.txt".into(),
                local_file: "/tmp/b.txt".into()
            }))
        );
        let usage = "Syntax error. Usage: GET_FILE <user> <remote_file> <local_file>";
        assert_eq!(usage_line("GET_FILE bob a.txt"), usage);
        assert_eq!(usage_line("get_file bob a b c"), usage);
    }

    #[test]
    fn share_takes_a_dir_and_an_optional_description() {
        assert_eq!(
            parse("share ."),
            Ok(Some(Command::Share {
                dir: ".".into(),
                description: None
            }))
        );
        assert_eq!(
            parse("SHARE music  my  songs "),
            Ok(Some(Command::Share {
                dir: "music".into(),
                description: Some("my  songs".into())
            }))
        );
        assert_eq!(
            usage_line("SHARE"),
            "Syntax error. Usage: SHARE <dir> [description...]"
        );
    }

    #[test]
    fn wrong_argument_counts_are_usage_errors() {
        assert_eq!(
            usage_line("REGISTER"),
            "Syntax error. Usage: REGISTER <user>"
        );
        assert_eq!(
            usage_line("register a b"),
            "Syntax error. Usage: REGISTER <user>"
        );
        assert_eq!(
            usage_line("LIST_USERS x"),
            "Syntax error. Usage: LIST_USERS"
        );
        assert_eq!(usage_line("QUIT now"), "Syntax error. Usage: QUIT");
        assert_eq!(usage_line("DELETE"), "Syntax error. Usage: DELETE <file>");
    }

    #[test]
    fn unknown_commands_name_what_was_typed() {
        assert_eq!(usage_line("frob a b"), "unknown command frob (type HELP)");
    }

    #[test]
    fn every_spec_parses_with_the_right_arity() {
        for spec in SPECS {
            let n = spec.args.split_whitespace().count();
            let line = std::iter::once(spec.name.to_lowercase())
                .chain((0..n).map(|i| format!("x{i}")))
                .collect::<Vec<_>>()
                .join(" ");
            assert!(matches!(parse(&line), Ok(Some(_))), "{line}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(line in "\\PC{0,80}") {
            let _ = parse(&line);
        }

        #[test]
        fn register_keeps_its_argument(name in "[!-~]{1,40}", upper in proptest::bool::ANY) {
            let command = if upper { "REGISTER" } else { "register" };
            proptest::prop_assert_eq!(
                parse(&format!("{command} {name}")),
                Ok(Some(Command::Register(name.clone())))
            );
        }
    }
}
