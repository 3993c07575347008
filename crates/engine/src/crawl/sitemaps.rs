//! Reading a task's sitemaps beside its crawl.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::mpsc;
use url::Url;

use super::ctx::{note_problem, Ctx};
use crate::fetch::{FetchError, Fetched, Want};
use crate::scope::{host_allowed, resolve_link};
use crate::sitemap::{self, Sitemap, MAX_SITEMAP_BYTES, MAX_SITEMAP_FILES};

/// Reads the task's sitemaps (and those the seeds' robots.txt name, when asked), following
/// indexes, and sends the page URLs in scope to the dispatcher.
pub(super) async fn read_sitemaps(ctx: Arc<Ctx>, found: mpsc::Sender<Vec<Url>>) {
    let inner = &ctx.task.0;
    let mut queue: VecDeque<Url> = inner.sitemaps.iter().cloned().collect();
    if inner.spec.sitemaps_from_robots {
        let mut origins = HashSet::new();
        for seed in &inner.seeds {
            if !origins.insert(seed.origin().ascii_serialization()) {
                continue;
            }
            let Some(robots) = ctx.polite.robots_for(seed, None).await else { return };
            queue.extend(robots.sitemaps().iter().filter_map(|s| resolve_link(seed, s)));
        }
    }
    let mut read = HashSet::new();
    while let Some(url) = queue.pop_front() {
        if !read.insert(url.clone()) {
            continue;
        }
        if read.len() > MAX_SITEMAP_FILES {
            tracing::warn!(task = %ctx.task.name(), "more than {MAX_SITEMAP_FILES} sitemaps; the rest are not read");
            break;
        }
        let report =
            ctx.fetcher.fetch(&url, ctx.cookie.as_ref(), Want::Any(MAX_SITEMAP_BYTES), &ctx.cancel).await;
        ctx.counters.pages.fetch_add(u64::from(report.responses), Relaxed);
        let failed = |problem: &dyn std::fmt::Display| {
            ctx.counters.errors.fetch_add(1, Relaxed);
            note_problem(&ctx, &url, &format_args!("sitemap: {problem}"));
            ctx.recent.error(&url, None, &format_args!("sitemap: {problem}"));
            tracing::warn!(task = %ctx.task.name(), %url, error = %problem, "sitemap failed");
        };
        let body = match report.result {
            Ok(Fetched::Body { body, .. }) => body,
            Ok(Fetched::Redirect { location, .. }) => {
                // Only to hosts the task may visit (as every sitemap it reads); a sitemap that
                // moved elsewhere is a problem the user can mend (it went without a word, and
                // a crawl of sitemaps alone ended with nothing and no error).
                match url.join(&location) {
                    Ok(next) if host_allowed(&next, &inner.allow_hosts) => queue.push_back(next),
                    Ok(next) => {
                        let host = next.host_str().unwrap_or_default();
                        failed(&format_args!(
                            "redirected to {next}, whose host is not in allow_hosts (add {host:?} to allow_hosts)"
                        ));
                    }
                    Err(e) => failed(&format_args!("redirected to {location:?}, not a URL: {e}")),
                }
                continue;
            }
            Ok(Fetched::NotHtml { .. }) => unreachable!("sitemaps are fetched as any content type"),
            Err(FetchError::Cancelled) => return,
            Err(e) => {
                failed(&e);
                continue;
            }
        };
        match sitemap::parse(&body) {
            Ok(Sitemap::Index(locs)) => queue.extend(
                locs.iter()
                    .filter_map(|l| resolve_link(&url, l))
                    .filter(|u| host_allowed(u, &inner.allow_hosts)),
            ),
            Ok(Sitemap::Pages(locs)) => {
                let urls: Vec<Url> = locs
                    .iter()
                    .filter_map(|l| resolve_link(&url, l))
                    .filter(|u| host_allowed(u, &inner.allow_hosts))
                    .collect();
                tracing::debug!(%url, listed = locs.len(), in_scope = urls.len(), "sitemap read");
                for chunk in urls.chunks(1000) {
                    if found.send(chunk.to_vec()).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => failed(&e),
        }
    }
}
