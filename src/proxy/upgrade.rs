//! Protocol upgrades (WebSocket): once the origin answers 101, the two
//! connections are joined byte for byte until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

pub fn tunnel(client: OnUpgrade, origin: OnUpgrade) {
    tokio::spawn(async move {
        let (client, origin) = match tokio::try_join!(client, origin) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut origin = TokioIo::new(origin);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut origin).await {
            tracing::debug!(error = %e, "tunnel closed with an error");
        }
    });
}
