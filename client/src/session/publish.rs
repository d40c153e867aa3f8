//! `PUBLISH` and `DELETE`, and the hashing that gives a published file its
//! content identity.
//!
//! A file of the share dir is hashed (or found in the hash cache) before it
//! is published, so that the directory records its size and BLAKE3 root
//! (`PUBLISH_CONTENT`) and peers get its piece list at once. Every path has
//! a classic twin: a file outside the share dir, one that cannot be hashed,
//! or a classic directory gets the classic `PUBLISH` with the same codes.
//! Both commands update the user's publication record
//! ([`crate::peer::published`]), the only list the listener serves from: a
//! file the directory accepted (or already had from this user's own
//! PUBLISH) is served, a deleted one no longer.

use std::sync::Arc;

use peerdex_protocol::{OpKind, Operation, Outcome, Reply};

use super::{reply_printed, request, Printed, Session};
use crate::content::pieces::Manifest;
use crate::content::Identity;
use crate::directory_client::DirectoryError;
use crate::directory_ext_client::ExtError;

impl Session {
    pub(super) async fn publish(&mut self, file: String, description: String) -> Printed {
        let mut warning = None;
        let mut identity = None;
        if let Err(err) = self.config.share.resolve(&file) {
            warning = Some(format!(
                "warning: {file} is not servable from {} ({err}); peers will get FILE NOT EXIST",
                self.config.share.root().display()
            ));
        } else {
            match self.hash(&file).await {
                Ok(manifest) => {
                    identity = Some(Identity {
                        size: manifest.size,
                        root: manifest.root,
                    })
                }
                // Served all the same; peers fall back or hash on request.
                Err(err) => warning = Some(format!("warning: cannot hash {file}: {err}")),
            }
        }
        let user = self.current_user().to_string();
        let result = self
            .send_publish(&user, &file, &description, identity)
            .await;
        let (mut printed, reply) = reply_printed(OpKind::Publish, result);
        if let Some(warning) = warning {
            printed.err.insert(0, format!("peerdex: {warning}"));
        }
        // ALREADY PUBLISHED: by this user, earlier; served all the same.
        if reply
            .is_some_and(|r| matches!(r.outcome(), Outcome::Ok | Outcome::ContentAlreadyPublished))
        {
            if let Some(warning) = self.note_publication(&user, &file, true) {
                printed = printed.with_reason(warning);
            }
        }
        printed
    }

    pub(super) async fn delete(&mut self, file: String) -> Printed {
        let user = self.current_user().to_string();
        let operation = Operation::Delete {
            file: Ok(file.clone()),
        };
        let (mut printed, reply) = self.simple(OpKind::Delete, &user, operation).await;
        // NOT PUBLISHED: the directory says so; nothing to serve either.
        if reply.is_some_and(|r| matches!(r.outcome(), Outcome::Ok | Outcome::ContentNotPublished))
        {
            if let Some(warning) = self.note_publication(&user, &file, false) {
                printed = printed.with_reason(warning);
            }
        }
        printed
    }

    /// PUBLISH_CONTENT when the identity is known and the directory may have
    /// the extension; PUBLISH otherwise, or when the directory turns out to
    /// be classic. Both have the same codes, so the caller prints PUBLISH's
    /// lines either way.
    pub(super) async fn send_publish(
        &self,
        user: &str,
        file: &str,
        description: &str,
        identity: Option<Identity>,
    ) -> Result<Reply, DirectoryError> {
        if let Some(Identity { size, root }) = identity {
            let operation = Operation::PublishContent {
                file: Ok(file.to_string()),
                description: Ok(description.to_string()),
                size: Ok(size),
                hash: Ok(root),
            };
            let datetime = self.config.time.now().await;
            match self
                .route
                .ext_call(self.is_own(user), &request(user, operation), &datetime)
                .await
            {
                Ok(reply) => return Ok(reply),
                Err(ExtError::Directory(err)) => return Err(err),
                Err(ExtError::Unsupported { .. }) => {}
            }
        }
        let operation = Operation::Publish {
            file: Ok(file.to_string()),
            description: Ok(description.to_string()),
        };
        self.call(user, operation).await
    }

    /// Computes (or finds in the cache) the hashes of a share dir file, so
    /// that peers get them at once. A bar on a terminal for big files.
    pub(super) async fn hash(&self, name: &str) -> std::io::Result<Arc<Manifest>> {
        let share = self.config.share.clone();
        let hashes = Arc::clone(&self.hashes);
        let progress = self.config.progress;
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let (file, path) = share
                .open_with_path(&name)
                .map_err(|err| std::io::Error::other(err.to_string()))?;
            if let Some(manifest) = hashes.cached(&path, &file)? {
                return Ok(manifest);
            }
            let bar = (progress && file.metadata()?.len() >= HASH_BAR_MIN).then(|| {
                let bar = indicatif::ProgressBar::with_draw_target(
                    Some(file.metadata().map_or(0, |m| m.len())),
                    indicatif::ProgressDrawTarget::stderr(),
                );
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "hashing {msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                ) {
                    bar.set_style(style);
                }
                bar.set_message(name.clone());
                bar
            });
            let result = hashes.manifest(&path, &file, |done, _| {
                if let Some(bar) = &bar {
                    bar.set_position(done);
                }
            });
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            result
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Files smaller than this are hashed without a progress bar.
const HASH_BAR_MIN: u64 = 64 << 20;

#[cfg(test)]
mod tests {
    use super::super::testing::{code, run, FakeDirectory};
    use peerdex_protocol::{OpKind, Operation};
    use std::fs;

    /// A classic directory: closes the connection without a reply on the
    /// extension ops, answers 0 to the rest.
    async fn classic_directory() -> FakeDirectory {
        FakeDirectory::start(|request, _| {
            if request.operation.kind().is_extension() {
                bytes::BytesMut::new()
            } else {
                code(0)
            }
        })
        .await
    }

    #[tokio::test]
    async fn publish_sends_the_content_identity_when_the_directory_has_it() {
        let directory = FakeDirectory::start(|request, _| match request.operation {
            Operation::FindSources { .. } => code(3),
            _ => code(0),
        })
        .await;
        let shared = tempfile::tempdir().unwrap();
        fs::write(shared.path().join("a.txt"), b"hello").unwrap();
        let mut al = directory.session(shared.path());
        run(&mut al, "REGISTER al").await;
        let printed = run(&mut al, "PUBLISH a.txt the a file").await;
        assert_eq!(printed.out, ["c> PUBLISH OK"]);
        // Not in the share dir: classic PUBLISH, with its warning.
        let printed = run(&mut al, "PUBLISH ghost.txt g").await;
        assert_eq!(printed.out, ["c> PUBLISH OK"]);
        assert_eq!(printed.err.len(), 1);
        let ops: Vec<Operation> = directory
            .requests()
            .into_iter()
            .map(|r| r.operation)
            .collect();
        // A read-only probe first: the directory's kind was unknown.
        assert_eq!(ops[1].kind(), OpKind::FindSources);
        assert_eq!(
            ops[2],
            Operation::PublishContent {
                file: Ok("a.txt".into()),
                description: Ok("the a file".into()),
                size: Ok(5),
                hash: Ok(*blake3::hash(b"hello").as_bytes()),
            }
        );
        assert_eq!(ops[3].kind(), OpKind::Publish);
    }

    #[tokio::test]
    async fn a_classic_directory_gets_classic_ops_and_search_fails() {
        let directory = classic_directory().await;
        let shared = tempfile::tempdir().unwrap();
        fs::write(shared.path().join("a.txt"), b"hello").unwrap();
        fs::write(shared.path().join("b.txt"), b"bye").unwrap();
        let mut al = directory.session(shared.path());
        run(&mut al, "REGISTER al").await;
        assert_eq!(run(&mut al, "PUBLISH a.txt a").await.out, ["c> PUBLISH OK"]);
        assert_eq!(run(&mut al, "PUBLISH b.txt b").await.out, ["c> PUBLISH OK"]);
        let searched = run(&mut al, "SEARCH a").await;
        assert_eq!(searched.out, ["c> SEARCH FAIL"]);
        assert_eq!(searched.err, ["peerdex: directory does not support SEARCH"]);
        let ops: Vec<OpKind> = directory
            .requests()
            .iter()
            .map(|r| r.operation.kind())
            .collect();
        // One read-only extension probe refused (never the mutation
        // itself), then never an extension op again.
        assert_eq!(
            ops,
            [
                OpKind::Register,
                OpKind::FindSources,
                OpKind::Publish,
                OpKind::Publish
            ]
        );
    }
}
