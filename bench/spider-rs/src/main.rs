//! spider-rs in whole-site mode: crawl every same-host link from a start URL and print the
//! number of pages it fetched. Usage: spider-bench URL CONCURRENCY

use spider::tokio;
use spider::website::Website;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: spider-bench URL CONCURRENCY");
    let concurrency: usize = args.next().and_then(|c| c.parse().ok()).unwrap_or(32);
    let mut website = Website::new(&url);
    website.with_respect_robots_txt(true).with_concurrency_limit(Some(concurrency));
    website.crawl().await;
    println!("{{\"pages\":{}}}", website.get_links().len());
}
