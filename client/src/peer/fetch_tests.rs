//! The download engine against fake sources on 127.0.0.1: several sources,
//! a dying one, a lying one, resume, classic fallback, truncation.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use peerdex_protocol::peer::{read_peer_request, PeerRequest};
use peerdex_protocol::peer_ext::{put_piece, RangeHeader};
use peerdex_protocol::wire::field_reader;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::fetch::{fetch, FetchError, FetchOptions, Fetched};
use super::resume::{part_path, state_path};
use super::sources::Source;
use super::swarm::Options;
use super::PeerAddr;
use crate::content::hash::{hash_reader, PIECE_SIZE};
use crate::content::pieces::Manifest;

/// How a fake source misbehaves.
#[derive(Debug, Clone)]
enum Behaviour {
    Good,
    /// Flips a byte of these pieces.
    Corrupt(HashSet<u64>),
    /// Serves this many ranges, then dies (no reply, stops accepting).
    StopAfter(u64),
    /// Announces the full length, sends half, closes.
    Truncate,
    /// Answers 2 to extension ops; serves the classic GET_FILE.
    Classic,
}

struct Fake {
    port: u16,
    /// Range requests answered in full.
    ranges: Arc<AtomicU64>,
}

impl Fake {
    fn source(&self) -> Source {
        Source {
            addr: PeerAddr {
                host: "127.0.0.1".into(),
                port: self.port,
            },
            file: "f.bin".into(),
        }
    }
}

async fn fake(data: Arc<Vec<u8>>, manifest: Arc<Manifest>, behaviour: Behaviour) -> Fake {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let ranges = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&ranges);
    let dead = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        let started = Arc::new(AtomicU64::new(0));
        while !dead.load(Ordering::SeqCst) {
            let Ok((mut sock, _)) = socket.accept().await else {
                return;
            };
            if dead.load(Ordering::SeqCst) {
                return;
            }
            let (data, manifest, behaviour) =
                (Arc::clone(&data), Arc::clone(&manifest), behaviour.clone());
            let (counted, started, dead) = (
                Arc::clone(&counted),
                Arc::clone(&started),
                Arc::clone(&dead),
            );
            tokio::spawn(async move {
                let mut reader = field_reader(&mut sock);
                let Ok(request) = read_peer_request(&mut reader).await else {
                    return;
                };
                drop(reader);
                let mut out = BytesMut::new();
                match (request, &behaviour) {
                    (
                        PeerRequest::GetHashes { .. } | PeerRequest::GetRange { .. },
                        Behaviour::Classic,
                    ) => {
                        out.extend_from_slice(b"2\0");
                    }
                    (PeerRequest::GetFile { .. }, _) => {
                        out.extend_from_slice(b"0\0");
                        out.extend_from_slice(&data);
                    }
                    (PeerRequest::GetHashes { .. }, _) => {
                        manifest.hashes_header().encode(&mut out);
                        for piece in &manifest.pieces {
                            put_piece(&mut out, piece);
                        }
                    }
                    (
                        PeerRequest::GetRange {
                            range: Some((offset, length)),
                            ..
                        },
                        _,
                    ) => {
                        let n = started.fetch_add(1, Ordering::SeqCst);
                        if let Behaviour::StopAfter(limit) = behaviour {
                            if n >= limit {
                                dead.store(true, Ordering::SeqCst);
                                return;
                            }
                        }
                        let end = (offset + length).min(manifest.size);
                        let mut bytes = data[offset as usize..end as usize].to_vec();
                        RangeHeader {
                            size: manifest.size,
                            root: manifest.root,
                            length: end - offset,
                        }
                        .encode(&mut out);
                        match &behaviour {
                            Behaviour::Corrupt(pieces)
                                if pieces.contains(&(offset / manifest.piece_size)) =>
                            {
                                bytes[0] ^= 0xff;
                            }
                            Behaviour::Truncate => bytes.truncate(bytes.len() / 2),
                            _ => {}
                        }
                        out.extend_from_slice(&bytes);
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => out.extend_from_slice(b"2\0"),
                }
                let _ = sock.write_all(&out).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Fake { port, ranges }
}

fn content(len: usize) -> (Arc<Vec<u8>>, Arc<Manifest>) {
    let data: Vec<u8> = (0..len as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 53) as u8)
        .collect();
    let manifest = hash_reader(&data[..], PIECE_SIZE, |_| {}).unwrap();
    (Arc::new(data), Arc::new(manifest))
}

fn options() -> FetchOptions {
    FetchOptions {
        engine: Options {
            in_flight: 2,
            max_failures: 2,
            checkpoint_every: 1,
        },
        ..FetchOptions::default()
    }
}

fn assert_intact(local: &Path, data: &[u8]) {
    let got = std::fs::read(local).unwrap();
    assert!(
        got == data,
        "content differs ({} vs {} bytes)",
        got.len(),
        data.len()
    );
    assert!(!part_path(local).exists() && !state_path(local).exists());
}

#[tokio::test]
async fn three_sources_one_dies_mid_download_completes_without_starting_over() {
    let (data, manifest) = content(40 * PIECE_SIZE as usize + 777);
    let a = fake(Arc::clone(&data), Arc::clone(&manifest), Behaviour::Good).await;
    let b = fake(Arc::clone(&data), Arc::clone(&manifest), Behaviour::Good).await;
    let c = fake(
        Arc::clone(&data),
        Arc::clone(&manifest),
        Behaviour::StopAfter(5),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("out.bin");
    let sources = [c.source(), a.source(), b.source()];
    let fetched = fetch(&sources, &local, &options()).await.unwrap();
    let Fetched::Verified { report, .. } = fetched else {
        panic!("not verified: {fetched:?}");
    };
    assert_intact(&local, &data);
    assert!(
        report.bytes_fetched < manifest.size * 3 / 2,
        "fetched {} bytes for {}",
        report.bytes_fetched,
        manifest.size
    );
    assert!(c.ranges.load(Ordering::SeqCst) <= 5);
    assert!(a.ranges.load(Ordering::SeqCst) > 0 && b.ranges.load(Ordering::SeqCst) > 0);
    assert!(
        report.notes.iter().any(|n| n.contains(&c.port.to_string())),
        "{:?}",
        report.notes
    );
}

#[tokio::test]
async fn a_lying_source_is_dropped_and_its_pieces_fetched_elsewhere() {
    let (data, manifest) = content(20 * PIECE_SIZE as usize);
    let liar_pieces: HashSet<u64> = (0..20).collect();
    let liar = fake(
        Arc::clone(&data),
        Arc::clone(&manifest),
        Behaviour::Corrupt(liar_pieces),
    )
    .await;
    let good = fake(Arc::clone(&data), Arc::clone(&manifest), Behaviour::Good).await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("out.bin");
    let fetched = fetch(&[liar.source(), good.source()], &local, &options())
        .await
        .unwrap();
    let Fetched::Verified { report, .. } = fetched else {
        panic!("not verified");
    };
    assert_intact(&local, &data);
    assert!(
        report.notes.iter().any(|n| n.contains("wrong piece")),
        "{:?}",
        report.notes
    );
    assert_eq!(good.ranges.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn an_interrupted_download_resumes_fetching_only_the_missing_pieces() {
    let (data, manifest) = content(12 * PIECE_SIZE as usize + 5);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("out.bin");
    let dying = fake(
        Arc::clone(&data),
        Arc::clone(&manifest),
        Behaviour::StopAfter(4),
    )
    .await;
    let err = fetch(&[dying.source()], &local, &options())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Incomplete { .. }), "{err}");
    assert!(!local.exists());
    assert!(part_path(&local).exists() && state_path(&local).exists());
    let first = dying.ranges.load(Ordering::SeqCst);
    assert_eq!(first, 4);

    let back = fake(Arc::clone(&data), Arc::clone(&manifest), Behaviour::Good).await;
    let fetched = fetch(&[back.source()], &local, &options()).await.unwrap();
    let Fetched::Verified { resumed, .. } = fetched else {
        panic!("not verified");
    };
    assert_eq!(resumed, first);
    assert_eq!(back.ranges.load(Ordering::SeqCst), manifest.count() - first);
    assert_intact(&local, &data);
}

#[tokio::test]
async fn a_state_for_other_content_starts_over() {
    let (old, old_manifest) = content(3 * PIECE_SIZE as usize);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("out.bin");
    let dying = fake(old, old_manifest, Behaviour::StopAfter(1)).await;
    assert!(fetch(&[dying.source()], &local, &options()).await.is_err());
    let (data, manifest) = content(4 * PIECE_SIZE as usize + 1);
    let good = fake(Arc::clone(&data), Arc::clone(&manifest), Behaviour::Good).await;
    fetch(&[good.source()], &local, &options()).await.unwrap();
    assert_eq!(good.ranges.load(Ordering::SeqCst), manifest.count());
    assert_intact(&local, &data);
}

#[tokio::test]
async fn a_classic_peer_gets_the_classic_transfer() {
    let (data, manifest) = content(3 * PIECE_SIZE as usize + 9);
    let classic = fake(Arc::clone(&data), manifest, Behaviour::Classic).await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("out.bin");
    let fetched = fetch(&[classic.source()], &local, &options())
        .await
        .unwrap();
    assert!(matches!(fetched, Fetched::Classic { size } if size == data.len() as u64));
    assert_intact(&local, &data);
}

#[tokio::test]
async fn a_truncated_extension_transfer_fails_and_keeps_the_part() {
    let (data, manifest) = content(3 * PIECE_SIZE as usize);
    let short = fake(data, manifest, Behaviour::Truncate).await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("out.bin");
    let err = fetch(&[short.source()], &local, &options())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Incomplete { .. }), "{err}");
    assert!(
        err.notes().iter().any(|n| n.contains("truncated")),
        "{:?}",
        err.notes()
    );
    assert!(!local.exists());
    assert!(part_path(&local).exists());
}

#[tokio::test]
async fn a_small_file_from_the_real_listener() {
    let (_shared, listener) =
        crate::peer::listener::listener_with(&[("tiny.txt", b"tiny"), ("empty", b"")]).await;
    listener.publish("tiny.txt");
    listener.publish("empty");
    let out = tempfile::tempdir().unwrap();
    for (name, bytes) in [("tiny.txt", &b"tiny"[..]), ("empty", b"")] {
        let source = Source {
            addr: PeerAddr {
                host: "127.0.0.1".into(),
                port: listener.local_addr().port(),
            },
            file: name.into(),
        };
        let local = out.path().join(name);
        let fetched = fetch(&[source], &local, &options()).await.unwrap();
        assert!(matches!(fetched, Fetched::Verified { .. }), "{name}");
        assert_intact(&local, bytes);
    }
}
