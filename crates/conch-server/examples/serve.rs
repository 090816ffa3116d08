//! Serves one model, for trying the server by hand and for tests/openai (until `conch serve`
//! exists): `cargo run -p conch-server --example serve -- MODEL [PORT]`.

use conch_server::{serve, ServerConfig};
use std::path::Path;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: serve MODEL [PORT]")?;
    let port = args.next().map(|p| p.parse()).transpose()?.unwrap_or(8080);
    let model = Arc::new(conch_engine::load(Path::new(&path))?);
    serve(
        model,
        ServerConfig {
            port,
            ..ServerConfig::default()
        },
    )
    .await?;
    Ok(())
}
