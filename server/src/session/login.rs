//! The login rules: what a `Login` frame is answered, and what the session
//! then proves.

use std::net::IpAddr;
use std::sync::Arc;

use peerdex_protocol::frame::{Login, LoginCode};
use peerdex_protocol::names::is_valid_user;
use tokio::time::Instant;

use crate::connection::Shared;

/// How a login ended.
#[derive(Debug)]
pub struct Decision {
    pub code: LoginCode,
    /// The PHC string the session proves (`Some` only with code 0): the
    /// account's, verified, or, for an account without a password or no
    /// account, the hash of the password the login carried.
    pub credential: Option<Arc<str>>,
}

impl Decision {
    fn answer(code: LoginCode) -> Decision {
        Decision {
            code,
            credential: None,
        }
    }
}

/// Decides a login from `from`. A protected account's password is
/// verified after the limiter's delay; a failure counts against the
/// account and the address.
pub async fn decide(shared: &Shared, login: Login, from: IpAddr) -> Decision {
    if !is_valid_user(&login.user) || shared.state.has_failed() {
        return Decision::answer(LoginCode::Fail);
    }
    let credential = shared.state.tables().credential(&login.user);
    match credential {
        Some(current) => {
            let delay = shared
                .limiter
                .delay(&login.user, from, Instant::now().into_std());
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match shared.hasher.verify(login.password, current.clone()).await {
                Ok(true) => {
                    shared.limiter.succeeded(&login.user);
                    Decision {
                        code: LoginCode::Ok,
                        credential: Some(current),
                    }
                }
                Ok(false) => {
                    shared
                        .limiter
                        .failed(&login.user, from, Instant::now().into_std());
                    Decision::answer(LoginCode::Refused)
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot verify a login");
                    Decision::answer(LoginCode::Fail)
                }
            }
        }
        None if login.password.is_empty() => Decision::answer(LoginCode::Ok),
        None => match shared.hasher.hash(login.password).await {
            Ok(hash) => Decision {
                code: LoginCode::Ok,
                credential: Some(hash),
            },
            Err(err) => {
                tracing::error!(error = %err, "cannot hash a login's password");
                Decision::answer(LoginCode::Fail)
            }
        },
    }
}
