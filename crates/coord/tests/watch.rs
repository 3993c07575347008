//! The list-then-watch view against a real 3-member etcd: it converges to etcd's state through
//! a member's death and restart and a compaction, without losing or repeating changes.

use std::collections::BTreeMap;
use std::time::Duration;

use crawler_coord::{Etcd, PrefixWatch};
use crawler_fixture::etcd::EtcdCluster;
use tokio_util::sync::CancellationToken;

async fn direct(etcd: &Etcd) -> (i64, BTreeMap<String, Vec<u8>>) {
    let resp =
        etcd.call("get", |mut c| async move {
            c.get("/t/", Some(etcd_client::GetOptions::new().with_prefix())).await
        })
        .await
        .unwrap();
    let rev = resp.header().unwrap().revision();
    (
        rev,
        resp.kvs()
            .iter()
            .map(|kv| (String::from_utf8_lossy(&kv.key()[3..]).into_owned(), kv.value().to_vec()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_converges_through_member_loss_and_compaction() {
    let mut cluster = EtcdCluster::start(3);
    let etcd = Etcd::connect(&cluster.endpoints(), Duration::from_secs(15)).await.unwrap();
    let stop = CancellationToken::new();
    let mut view = PrefixWatch::spawn(etcd.clone(), "/t/", stop.clone());
    view.ready().await;
    for i in 0..120u32 {
        let key = format!("/t/k{}", i % 40);
        etcd.call("put", |mut c| {
            let key = key.clone();
            async move { c.put(key, i.to_string(), None).await }
        })
        .await
        .unwrap();
        if i % 7 == 0 {
            let key = format!("/t/k{}", (i + 3) % 40);
            etcd.call("delete", |mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await
            .unwrap();
        }
        match i {
            30 => cluster.members[0].kill(),
            60 => {
                let (rev, _) = direct(&etcd).await;
                etcd.call("compact", |mut c| async move {
                    c.compact(rev, Some(etcd_client::CompactionOptions::new().with_physical())).await
                })
                .await
                .unwrap();
            }
            80 => cluster.members[0].restart(),
            90 => cluster.members[1].kill(),
            _ => {}
        }
    }
    let (rev, want) = direct(&etcd).await;
    let got = tokio::time::timeout(Duration::from_secs(10), view.wait_for(|s| s.revision >= rev))
        .await
        .expect("the view caught up")
        .unwrap();
    let got: BTreeMap<String, Vec<u8>> =
        got.entries.iter().map(|(k, e)| (k.clone(), e.value.clone())).collect();
    assert_eq!(got, want);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_member_without_a_leader_ends_instead_of_going_quiet() {
    // A member cut off from the others (here: the others gone, the same state for it) kept its
    // clients' watches open and silent: a master's view froze while the rest of the cluster went
    // on. Our client asks for a leader, so the member ends the watch and the view reloads from
    // another endpoint.
    let mut cluster = EtcdCluster::start(3);
    let endpoint = [cluster.members[0].client_url.clone()];
    let etcd = Etcd::connect(&endpoint, Duration::from_secs(5)).await.unwrap();
    let mut stream =
        etcd.client().watch("/t/", Some(etcd_client::WatchOptions::new().with_prefix())).await.unwrap();
    cluster.members[1].kill();
    cluster.members[2].kill();
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.message().await {
                Ok(Some(resp)) if resp.canceled() => return format!("cancelled: {}", resp.cancel_reason()),
                Ok(Some(_)) => continue,
                Ok(None) => return "closed".to_owned(),
                Err(e) => return format!("error: {e}"),
            }
        }
    })
    .await;
    let ended = ended.expect("the watch went on, silent, on a member without a leader");
    assert!(ended.contains("leader"), "{ended}");
}
