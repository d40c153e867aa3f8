//! Tests of the directory extensions (PUBLISH_CONTENT, SEARCH,
//! FIND_SOURCES, WHOIS) through the server's own rules, engine and indexes,
//! without sockets. Inside the crate because they commit through
//! [`Engine::commit`], which exists only for tests.

use std::net::IpAddr;

use crate::durable::engine::{Engine, Mutation};
use crate::query::{query, QueryAnswer};
use crate::rules::{self, Plan};
use peerdex_protocol::reply::{SearchEntry, SourcesReply, Whois};
use peerdex_protocol::wire::{field_reader, read_reply};
use peerdex_protocol::{ConnectAddr, OpKind, Operation, Outcome, Reply, Request};
use std::cell::RefCell;

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

struct Fixture {
    dir: tempfile::TempDir,
    engine: RefCell<Option<Engine>>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = RefCell::new(Some(Engine::open(dir.path()).unwrap()));
        Fixture { dir, engine }
    }

    /// Commits `mutations` as one batch.
    fn commit(&self, mutations: &[Mutation]) -> Vec<Outcome> {
        self.engine.borrow_mut().as_mut().unwrap().commit(mutations)
    }

    fn restart(&mut self) {
        self.engine.take().unwrap().close().unwrap();
        self.engine = RefCell::new(Some(Engine::open(self.dir.path()).unwrap()));
    }

    fn run(&self, user: &str, operation: Operation) -> Reply {
        let kind = operation.kind();
        let request = Request {
            datetime: None,
            user: Ok(user.to_string()),
            operation,
        };
        let outcome = match rules::plan(&request) {
            Plan::Answer(outcome) => outcome,
            Plan::Mutate { user } => self.commit(&[Mutation {
                user,
                operation: request.operation.clone(),
                peer_ip: PEER,
                actor: crate::actor::Actor::Classic,
                takeover: None,
            }])[0],
            Plan::Read { .. } => panic!("listing"),
            Plan::Query { user } => match query(
                self.engine.borrow().as_ref().unwrap().state(),
                &user,
                &request.operation,
            )
            .unwrap()
            {
                QueryAnswer::Status(outcome) => outcome,
                QueryAnswer::Reply(bytes) => {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    return runtime
                        .block_on(read_reply(&mut field_reader(&bytes[..]), kind))
                        .unwrap();
                }
            },
        };
        Reply::Status(outcome)
    }

    fn code(&self, user: &str, operation: Operation) -> u8 {
        let kind = operation.kind();
        kind.code(self.run(user, operation).outcome())
    }

    fn ok(&self, user: &str, operation: Operation) {
        assert_eq!(self.code(user, operation), 0);
    }

    fn connected(&self, user: &str, port: u16) {
        self.ok(user, Operation::Register);
        self.ok(user, connect(port));
    }

    fn search(&self, user: &str, pattern: &str, limit: u32) -> (u64, Vec<SearchEntry>) {
        match self.run(user, search(pattern, limit)) {
            Reply::Search(reply) => (reply.total, reply.entries),
            other => panic!("{other:?}"),
        }
    }

    fn sources(&self, user: &str, operation: Operation) -> SourcesReply {
        match self.run(user, operation) {
            Reply::Sources(reply) => reply,
            other => panic!("{other:?}"),
        }
    }
}

fn connect(port: u16) -> Operation {
    Operation::Connect(ConnectAddr {
        ip: Ok(Some("10.0.0.1".parse().unwrap())),
        port: Ok(port),
    })
}

fn publish(file: &str) -> Operation {
    Operation::Publish {
        file: Ok(file.into()),
        description: Ok(format!("about {file}")),
    }
}

fn publish_content(file: &str, size: u64, hash: u8) -> Operation {
    Operation::PublishContent {
        file: Ok(file.into()),
        description: Ok(format!("about {file}")),
        size: Ok(size),
        hash: Ok([hash; 32]),
    }
}

fn search(pattern: &str, limit: u32) -> Operation {
    Operation::Search {
        pattern: Ok(pattern.into()),
        limit: Ok(limit),
    }
}

fn by_hash(hash: u8) -> Operation {
    Operation::FindSources {
        hash: Ok(Some([hash; 32])),
        remote_user: Ok(String::new()),
        file: Ok(String::new()),
    }
}

fn by_entry(user: &str, file: &str) -> Operation {
    Operation::FindSources {
        hash: Ok(None),
        remote_user: Ok(user.into()),
        file: Ok(file.into()),
    }
}

fn listed(entries: &[SearchEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            format!(
                "{}/{}{}",
                e.owner,
                e.file,
                if e.connected { "+" } else { "" }
            )
        })
        .collect()
}

#[test]
fn publish_content_codes() {
    let f = Fixture::new();
    assert_eq!(f.code("al", publish_content("f", 1, 1)), 1);
    f.ok("al", Operation::Register);
    assert_eq!(f.code("al", publish_content("f", 1, 1)), 2);
    f.ok("al", connect(4000));
    f.ok("al", publish_content("f", 1, 1));
    assert_eq!(f.code("al", publish_content("f", 1, 1)), 3);
    assert_eq!(f.code("al", publish("f")), 3);
    let bad_size = Operation::PublishContent {
        file: Ok("g".into()),
        description: Ok(String::new()),
        size: Err(peerdex_protocol::Malformed::Invalid("size")),
        hash: Ok([0; 32]),
    };
    assert_eq!(f.code("al", bad_size), 4);
    let bad_hash = Operation::PublishContent {
        file: Ok("g".into()),
        description: Ok(String::new()),
        size: Ok(1),
        hash: Err(peerdex_protocol::Malformed::Invalid("hash")),
    };
    assert_eq!(f.code("al", bad_hash), 4);
    assert_eq!(f.code("al", publish_content("a b", 1, 1)), 4);
    // The entry is an ordinary one for classic ops.
    f.ok(
        "al",
        Operation::Delete {
            file: Ok("f".into()),
        },
    );
    f.ok("al", publish_content("f", 2, 2));
}

#[test]
fn search_codes_order_cap_and_fields() {
    let mut f = Fixture::new();
    assert_eq!(f.code("al", search("x", 5)), 1);
    f.ok("al", Operation::Register);
    assert_eq!(f.code("al", search("x", 5)), 2);
    f.ok("al", connect(4000));
    assert_eq!(f.code("al", search("", 5)), 3);
    let bad_limit = Operation::Search {
        pattern: Ok("x".into()),
        limit: Err(peerdex_protocol::Malformed::Invalid("limit")),
    };
    assert_eq!(f.code("al", bad_limit), 3);
    f.connected("bo", 4001);
    f.ok("bo", publish_content("Song.MP3", 42, 9));
    f.ok("al", publish("my_song.txt"));
    f.ok("bo", Operation::Disconnect);
    f.connected("cy", 4002);
    f.ok("cy", publish("xSONGx"));
    f.ok("cy", publish("other"));
    let (total, entries) = f.search("al", "song", 10);
    assert_eq!(total, 3);
    assert_eq!(
        listed(&entries),
        ["al/my_song.txt+", "cy/xSONGx+", "bo/Song.MP3"]
    );
    let bo = &entries[2];
    assert_eq!(
        (bo.size, bo.hash, bo.description.as_str()),
        (Some(42), Some([9; 32]), "about Song.MP3")
    );
    assert_eq!((entries[0].size, entries[0].hash), (None, None));
    let (total, entries) = f.search("al", "SONG", 1);
    assert_eq!(
        (total, listed(&entries)),
        (3, vec!["al/my_song.txt+".to_string()])
    );
    assert_eq!(listed(&f.search("al", "s?ng.*3", 10).1), ["bo/Song.MP3"]);
    assert_eq!(f.search("al", "o", 10).0, 4);
    assert_eq!(f.search("al", "nothing", 10), (0, vec![]));
    // Index follows DELETE, UNREGISTER, CONNECT, DISCONNECT.
    f.ok(
        "cy",
        Operation::Delete {
            file: Ok("xSONGx".into()),
        },
    );
    f.ok("bo", connect(4001));
    assert_eq!(
        listed(&f.search("al", "song", 10).1),
        ["al/my_song.txt+", "bo/Song.MP3+"]
    );
    f.ok("al", Operation::Disconnect);
    f.ok("bo", Operation::Unregister);
    assert_eq!(listed(&f.search("cy", "song", 10).1), ["al/my_song.txt"]);
    // Rebuilt from the store after a restart.
    f.ok("cy", publish_content("song2", 7, 7));
    f.restart();
    let (total, entries) = f.search("cy", "SONG", 10);
    assert_eq!(total, 2);
    assert_eq!(listed(&entries), ["cy/song2+", "al/my_song.txt"]);
    assert_eq!(entries[0].hash, Some([7; 32]));
}

/// The index answers exactly what a brute-force scan answers.
#[test]
fn search_matches_brute_force_over_ten_thousand_entries() {
    let f = Fixture::new();
    let mut all = Vec::new();
    let mut mutations = Vec::new();
    let mutation = |user: &str, operation| Mutation {
        user: user.to_string(),
        operation,
        peer_ip: PEER,
        actor: crate::actor::Actor::Classic,
        takeover: None,
    };
    for i in 0..5_000u32 {
        let user = format!("user{i:04}");
        mutations.push(mutation(&user, Operation::Register));
        // Files are published while connected; two users in three
        // disconnect afterwards.
        mutations.push(mutation(&user, connect(9)));
        for (j, stem) in ["Report", "photo_ÄÖ"].iter().enumerate() {
            let file = format!(
                "{stem}-{}.{}",
                i * 7 % 1000,
                if j == 0 { "PDF" } else { "jpg" }
            );
            mutations.push(mutation(&user, publish(&file)));
            all.push((i % 3 != 0, user.clone(), file));
        }
        if i % 3 != 0 {
            mutations.push(mutation(&user, Operation::Disconnect));
        }
    }
    let outcomes = f.commit(&mutations);
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Ok),
        "setup committed"
    );
    f.connected("q", 1);
    all.sort();
    for pattern in [
        "report-12",
        "12",
        "PHOTO_äö-99",
        "r*t-1?.pdf",
        "?",
        "x",
        ".jpg",
        "t-99*pd",
        "ö-1",
    ] {
        let parsed = crate::index::Pattern::parse(pattern).unwrap();
        let expected: Vec<String> = all
            .iter()
            .filter(|(_, _, file)| parsed.matches(file))
            .map(|(offline, user, file)| {
                format!("{user}/{file}{}", if *offline { "" } else { "+" })
            })
            .collect();
        let (total, entries) = f.search("q", pattern, 1000);
        assert_eq!(total as usize, expected.len(), "{pattern}");
        let shown = expected.len().min(1000);
        assert_eq!(listed(&entries), expected[..shown], "{pattern}");
        // A brute-force check of the matcher itself on one pattern.
        if pattern == "report-12" {
            let by_hand = all
                .iter()
                .filter(|(_, _, file)| file.to_lowercase().contains("report-12"))
                .count();
            assert_eq!(total as usize, by_hand);
        }
    }
}

#[test]
fn find_sources_only_connected_owners_of_the_same_hash() {
    let f = Fixture::new();
    assert_eq!(f.code("al", by_hash(1)), 1);
    f.connected("al", 4000);
    assert_eq!(f.code("al", by_hash(1)), 3);
    assert_eq!(f.code("al", by_entry("bo", "f")), 3);
    assert_eq!(f.code("al", by_entry("", "")), 4);
    f.connected("bo", 4001);
    f.connected("cy", 4002);
    f.connected("dd", 4003);
    f.ok("bo", publish_content("f", 10, 1));
    f.ok("cy", publish_content("copy-of-f", 10, 1));
    f.ok("dd", publish_content("other", 10, 2));
    f.ok("al", publish("plain"));
    let reply = f.sources("al", by_entry("bo", "f"));
    assert_eq!((reply.size, reply.hash), (Some(10), Some([1; 32])));
    let names: Vec<_> = reply
        .sources
        .iter()
        .map(|s| (s.user.as_str(), s.file.as_str(), s.port.as_str()))
        .collect();
    assert_eq!(names, [("bo", "f", "4001"), ("cy", "copy-of-f", "4002")]);
    f.ok("cy", Operation::Disconnect);
    assert_eq!(f.sources("al", by_hash(1)).sources.len(), 1);
    // Owner offline: still published, no source.
    f.ok("bo", Operation::Disconnect);
    let reply = f.sources("al", by_hash(1));
    assert_eq!((reply.size, reply.sources.len()), (Some(10), 0));
    // An entry without a hash: its owner alone.
    let reply = f.sources("dd", by_entry("al", "plain"));
    assert_eq!(
        (reply.size, reply.hash, reply.sources.len()),
        (None, None, 1)
    );
    assert_eq!(reply.sources[0].user, "al");
    // Deleted and unregistered entries are gone from the hash index.
    f.ok(
        "dd",
        Operation::Delete {
            file: Ok("other".into()),
        },
    );
    assert_eq!(f.code("al", by_hash(2)), 3);
    f.ok("cy", Operation::Unregister);
    f.ok("bo", Operation::Unregister);
    assert_eq!(f.code("al", by_hash(1)), 3);
    assert_eq!(OpKind::FindSources.code(Outcome::ContentNotPublished), 3);
}

fn whois(target: &str) -> Operation {
    Operation::Whois {
        target: Ok(target.into()),
    }
}

impl Fixture {
    fn whois(&self, user: &str, target: &str) -> Whois {
        match self.run(user, whois(target)) {
            Reply::Whois(whois) => whois,
            other => panic!("{other:?}"),
        }
    }

    fn set_clock(&self, clock: crate::durable::engine::Clock) {
        self.engine.borrow_mut().as_mut().unwrap().set_clock(clock);
    }
}

#[test]
fn whois_codes_and_states() {
    let mut f = Fixture::new();
    f.set_clock(|| 1_735_689_600 + 3_723);
    // Nobody is asked to exist, be connected or be registered.
    assert_eq!(f.code("nobody", whois("al")), 1);
    f.ok("al", Operation::Register);
    let never = Whois::Offline { last_seen: None };
    assert_eq!(f.whois("nobody", "al"), never);
    f.ok(
        "al",
        Operation::Connect(ConnectAddr {
            ip: Ok(Some("::ffff:10.0.0.9".parse().unwrap())),
            port: Ok(4000),
        }),
    );
    // As LIST_USERS shows the entry (the IP canonical).
    let online = Whois::Online {
        ip: "10.0.0.9".into(),
        port: "4000".into(),
    };
    assert_eq!(f.whois("al", "al"), online);
    f.ok("al", Operation::Disconnect);
    let offline = Whois::Offline {
        last_seen: Some("01/01/2025 01:02:03".into()),
    };
    assert_eq!(f.whois("bo", "al"), offline);
    // The last disconnect is durable.
    f.restart();
    assert_eq!(f.whois("bo", "al"), offline);
    // A malformed target is the catch-all; so is a malformed requester.
    let malformed = Operation::Whois {
        target: Err(peerdex_protocol::Malformed::TooLong),
    };
    assert_eq!(f.code("bo", malformed), 2);
    let request = Request {
        datetime: None,
        user: Err(peerdex_protocol::Malformed::TooLong),
        operation: whois("al"),
    };
    assert!(matches!(rules::plan(&request), Plan::Answer(Outcome::Fail)));
    // UNREGISTER forgets everything: a new account was never seen.
    f.ok("al", Operation::Unregister);
    assert_eq!(f.code("bo", whois("al")), 1);
    f.ok("al", Operation::Register);
    assert_eq!(f.whois("bo", "al"), never);
}

#[test]
fn whois_reply_bytes() {
    let f = Fixture::new();
    f.ok("al", Operation::Register);
    let state = |f: &Fixture| {
        let engine = f.engine.borrow();
        match query(engine.as_ref().unwrap().state(), "x", &whois("al")).unwrap() {
            QueryAnswer::Reply(bytes) => bytes.to_vec(),
            QueryAnswer::Status(outcome) => panic!("{outcome:?}"),
        }
    };
    assert_eq!(state(&f), b"0\0offline\0never\0");
    f.ok("al", connect(80));
    assert_eq!(state(&f), b"0\0online\x0010.0.0.1\x0080\0");
}
