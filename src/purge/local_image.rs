//! A local image on a builder's Docker Engine: inspected, removed, and verified gone. It
//! holds no evidence of its own: what it was built from is in the registry and records.

use crate::config::Config;
use crate::error::RemoteError;
use crate::model::Driver;
use crate::plan::Target;
use crate::purge::evidence::Evidence;
use crate::purge::remotes::Remotes;
use crate::purge::verify::{Verdict, VerifyInputs};
use crate::purge::{BoxFuture, Executed, Outcome, TargetKind};
use crate::remote::endpoint::require_endpoint;
use crate::remote::engine::Engine;
use crate::report::escape::Term;
use crate::store::ActionRow;

pub struct LocalImage;

fn fields(target: &Target) -> (&str, Option<&str>, &str) {
    match target {
        Target::LocalImage {
            builder,
            endpoint,
            reference,
        } => (builder, endpoint.as_deref(), reference),
        _ => unreachable!("dispatched by kind_of"),
    }
}

impl TargetKind for LocalImage {
    fn place(&self, target: &Target) -> String {
        fields(target).0.to_owned()
    }

    fn identity(&self, target: &Target) -> String {
        let (builder, _, reference) = fields(target);
        format!("local-image\0{builder}\0{reference}")
    }

    fn check<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
    ) -> BoxFuture<'a, Result<String, RemoteError>> {
        Box::pin(async move {
            let (builder, endpoint, reference) = fields(target);
            let (endpoint, _) = require_endpoint(&cx.config, builder, endpoint, None)?;
            if cx.local_image_surely_absent(&endpoint, reference).await {
                return Ok("not present".to_owned());
            }
            let engine = Engine::connect(&endpoint).await?;
            Ok(match engine.image_inspect(reference).await? {
                Some(_) => "present".to_owned(),
                None => "not present".to_owned(),
            })
        })
    }

    fn evidence<'a>(
        &'a self,
        _target: &'a Target,
        _cx: &'a Remotes,
        _opts: &'a Evidence,
    ) -> BoxFuture<'a, Result<(), RemoteError>> {
        Box::pin(async { Ok(()) })
    }

    fn execute<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
    ) -> BoxFuture<'a, Result<Executed, RemoteError>> {
        Box::pin(async move {
            let (builder, endpoint, reference) = fields(target);
            let (endpoint, _) =
                require_endpoint(&cx.config, builder, endpoint, Some(Driver::Docker))?;
            let outcome = if cx.local_image_surely_absent(&endpoint, reference).await {
                Outcome::Image { removed: false }
            } else {
                remove_local_image(&endpoint, reference).await?
            };
            Ok(Executed::Done {
                outcome,
                purged: None,
            })
        })
    }

    fn verify<'a>(
        &'a self,
        target: &'a Target,
        _rows: &'a [ActionRow],
        cx: &'a Remotes,
        _inputs: &'a VerifyInputs,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let (builder, endpoint, reference) = fields(target);
            if let Ok((endpoint, _)) =
                require_endpoint(&cx.config, builder, endpoint, Some(Driver::Docker))
                && cx.local_image_surely_absent(&endpoint, reference).await
            {
                return Verdict::Gone;
            }
            local_image_verdict(&cx.config, builder, endpoint, reference).await
        })
    }
}

async fn remove_local_image(endpoint: &str, reference: &str) -> Result<Outcome, RemoteError> {
    let engine = Engine::connect(endpoint).await?;
    Ok(Outcome::Image {
        removed: engine.remove_image(reference, true).await?,
    })
}

async fn local_image_verdict(
    config: &Config,
    builder: &str,
    endpoint: Option<&str>,
    reference: &str,
) -> Verdict {
    let found = async {
        let (endpoint, _) = require_endpoint(config, builder, endpoint, Some(Driver::Docker))?;
        let engine = Engine::connect(&endpoint).await?;
        engine.image_inspect(reference).await
    }
    .await;
    match found {
        Ok(None) => Verdict::Gone,
        Ok(Some(_)) => Verdict::Present {
            detail: format!(
                "local image `{reference}` is still on `{builder}`",
                builder = Term(builder)
            ),
        },
        Err(err) => Verdict::Unverified {
            detail: format!("cannot ask `{builder}`: {err}", builder = Term(builder)),
        },
    }
}
