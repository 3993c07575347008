//! Fenced resource writes against a real etcd: a delete stays a success when it is tried
//! again after its first answer was lost, and a stale retry never deletes a newer resource.

use std::time::Duration;

use crawler_coord::resources::{self, CreateOutcome, ResourceRecord};
use crawler_coord::{Etcd, Fence};
use crawler_fixture::etcd::EtcdCluster;

async fn fence(etcd: &Etcd) -> Fence {
    let key = "/test/leader";
    let resp = etcd.call("put", |mut c| async move { c.put(key, "me", None).await }).await.unwrap();
    let revision = resp.header().unwrap().revision();
    Fence { key: key.as_bytes().to_vec(), revision }
}

fn record(name: &str, id: &str) -> ResourceRecord {
    ResourceRecord {
        id: id.into(),
        name: name.into(),
        assigned_node: "w1".into(),
        creation_time: 1,
        task: None,
        partitions: None,
        create_revision: 0,
    }
}

async fn created_at(etcd: &Etcd, name: &str) -> Option<i64> {
    let key = crawler_coord::keys::resource(name);
    let resp = etcd
        .call("get", |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await
        .unwrap();
    resp.kvs().first().map(|kv| kv.create_revision())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_tried_again_after_a_lost_answer_still_succeeds() {
    let cluster = EtcdCluster::start(1);
    let etcd = Etcd::connect(&cluster.endpoints(), Duration::from_secs(5)).await.unwrap();
    let fence = fence(&etcd).await;
    assert!(matches!(
        resources::create(&etcd, &fence, &record("books", "a")).await.unwrap(),
        CreateOutcome::Created(_, None)
    ));
    // The same add tried again (its answer lost) finds its own record, and says which.
    let retried = ResourceRecord { assigned_node: "w9".into(), ..record("books", "a") };
    match resources::create(&etcd, &fence, &retried).await.unwrap() {
        CreateOutcome::Created(_, Some(stored)) => assert_eq!(stored.assigned_node, "w1"),
        other => panic!("{other:?}"),
    }
    let created = created_at(&etcd, "books").await.unwrap();

    // The first try applies; its answer is lost; the same try is sent again.
    resources::delete_created_at(&etcd, &fence, "books", created).await.unwrap();
    assert_eq!(created_at(&etcd, "books").await, None);
    resources::delete_created_at(&etcd, &fence, "books", created).await.unwrap();
    // A new delete call of a resource that is gone is "not found".
    assert!(resources::delete(&etcd, &fence, "books").await.unwrap().is_none());

    // Re-created since: a late retry of the old delete leaves the new resource alone.
    resources::create(&etcd, &fence, &record("books", "b")).await.unwrap();
    resources::delete_created_at(&etcd, &fence, "books", created).await.unwrap();
    assert!(created_at(&etcd, "books").await.is_some());
    assert!(resources::delete(&etcd, &fence, "books").await.unwrap().is_some());
    assert_eq!(created_at(&etcd, "books").await, None);

    // A stale fence writes nothing.
    resources::create(&etcd, &fence, &record("books", "c")).await.unwrap();
    let stale = Fence { revision: fence.revision - 1, ..fence };
    assert!(matches!(
        resources::delete(&etcd, &stale, "books").await,
        Err(crawler_coord::CoordError::NotLeader)
    ));
    assert!(created_at(&etcd, "books").await.is_some());
}
