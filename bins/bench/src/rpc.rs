//! `rpc`: echo calls in either direction at a fixed concurrency.

use serde_json::{Map, Value, json};

use crate::cli::{Direction, RpcArgs};
use crate::gateway::Target;
use crate::measure::{self, Op, Progress};
use crate::{anchor, setup};

pub(crate) async fn run(args: RpcArgs) -> anyhow::Result<Map<String, Value>> {
    let common = &args.common;
    // Check NATS first so a missing server fails fast.
    let nats = if common.anchor {
        Some(anchor::connect(&common.nats_url).await?)
    } else {
        None
    };
    let target = Target::new(common).await?;
    let service = setup::service(&target, None).await?;
    let edges = setup::edges(&target, args.connections).await?;
    let ids = edges
        .iter()
        .map(setup::edge_id)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let body = setup::body(args.payload);
    let name = setup::service_name();
    let ops: Vec<Op> = (0..args.concurrency as usize)
        .map(|i| {
            let k = i % edges.len();
            let body = body.clone();
            let op: Op = match args.direction {
                Direction::ServiceToEdge => {
                    let (service, id) = (service.clone(), ids[k]);
                    Box::new(move || {
                        let (service, body) = (service.clone(), body.clone());
                        Box::pin(async move {
                            let n = body.len() as u64;
                            match service.call(id, setup::ECHO, body).await {
                                Ok(answer) => Ok(n + answer.len() as u64),
                                Err(e) => Err(e.to_string()),
                            }
                        })
                    })
                }
                Direction::EdgeToService => {
                    let (edge, name) = (edges[k].clone(), name.clone());
                    Box::new(move || {
                        let (edge, body, name) = (edge.clone(), body.clone(), name.clone());
                        Box::pin(async move {
                            let n = body.len() as u64;
                            match edge
                                .call_service(Some(&name), setup::ECHO, body, None)
                                .await
                            {
                                Ok(answer) => Ok(n + answer.len() as u64),
                                Err(e) => Err(e.to_string()),
                            }
                        })
                    })
                }
            };
            op
        })
        .collect();
    let progress = Progress::start(
        format!(
            "rpc {} c={} {}B",
            args.direction.as_str(),
            args.concurrency,
            args.payload
        ),
        "calls",
    );
    let measured = measure::run_workers(ops, common.warmup(), common.duration(), &progress).await;
    progress.finish();
    measured.check("rpc")?;
    let mut report = common.params("rpc");
    report.insert("direction".into(), json!(args.direction.as_str()));
    report.insert("payload".into(), json!(args.payload));
    report.insert("concurrency".into(), json!(args.concurrency));
    report.insert("connections".into(), json!(args.connections));
    measured.fields(&mut report, false);
    for edge in &edges {
        edge.close().await;
    }
    service.close().await;
    drop(target);
    if let Some(nats) = nats {
        let anchor = anchor::rpc(
            &nats,
            &common.nats_url,
            args.connections,
            args.concurrency,
            &body,
            true,
            common,
        )
        .await?;
        measure::add_anchor(&mut report, anchor);
    }
    Ok(report)
}
