//! The agent's HTTP endpoint. For now it serves Prometheus metrics; the management API joins
//! it here.
use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus::Registry;
use tokio::net::TcpListener;
use tracing::error;

pub fn router(registry: Registry) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    crate::metrics::render(&registry),
                )
                    .into_response()
            }
        }),
    )
}

pub async fn serve(listener: TcpListener, registry: Registry) {
    if let Err(e) = axum::serve(listener, router(registry)).await {
        error!(error = %e, "metrics server stopped");
    }
}
