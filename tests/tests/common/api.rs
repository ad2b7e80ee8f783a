//! Helpers of the REST API tests (authorization matrix, schemathesis, secret canary): a
//! ready server with its JSON log in a file, tokens issued through the CLI, and a client
//! per token. The process and the HTTP client are [`super::Server`] and [`super::Http`].

use std::path::Path;

use super::{Http, Server, Store, str_of};

/// Starts `confstore serve --log-format json` on the store in `dir` (created on first run),
/// its stderr in `<dir>/serve.log`, and waits until `/readyz` answers 200.
pub fn ready_server(dir: &Path) -> Server {
    let store = Store::in_dir(dir);
    let mut server = Server::start(&store, &["--log-format", "json"], &dir.join("serve.log"));
    server.wait_ready();
    server
}

/// [`ready_server`] with environment variables for the server.
pub fn ready_server_env(dir: &Path, env: &[(&str, &str)]) -> Server {
    let store = Store::in_dir(dir);
    let mut server = Server::start_env(&store, &["--log-format", "json"], env, &dir.join("serve.log"));
    server.wait_ready();
    server
}

/// A client of `server` sending `token`.
pub fn client_with(server: &Server, token: &str) -> Http {
    server.client().with_token(token)
}

/// A token issued through the CLI.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// Public id.
    pub id: String,
    /// The bearer token.
    pub token: String,
}

/// `confstore token create --role ROLE [--service S] --name NAME --json`.
#[track_caller]
pub fn token_create(store: &Store, role: &str, service: Option<&str>, name: &str) -> IssuedToken {
    let mut args = vec!["token", "create", "--role", role, "--name", name, "--json"];
    if let Some(s) = service {
        args.extend(["--service", s]);
    }
    let out = store.json(&args);
    IssuedToken { id: str_of(&out, "id").to_owned(), token: str_of(&out, "token").to_owned() }
}
