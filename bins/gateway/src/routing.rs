//! Choosing among candidate services, with no I/O: rendezvous (highest random weight)
//! hashing, so adding or removing a service moves only the keys that service wins.

use std::net::IpAddr;

use crate::config::HashBy;

/// What a route is hashed by, from `hashby`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKey {
    /// A stable key (the edge id, or a hash of the source IP).
    Stable(u64),
    /// No affinity: pick at random.
    Random,
}

impl RouteKey {
    /// The key for traffic from edge `edge_id` at `ip` under `hashby`.
    pub fn for_edge(hashby: HashBy, edge_id: u64, ip: Option<IpAddr>) -> RouteKey {
        match hashby {
            HashBy::EdgeId => RouteKey::Stable(edge_id),
            HashBy::SrcIp => RouteKey::Stable(ip.map_or(edge_id, hash_ip)),
            HashBy::Random => RouteKey::Random,
        }
    }
}

fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => mix(u64::from(u32::from(v4))),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            mix((bits >> 64) as u64 ^ mix(bits as u64))
        }
    }
}

/// splitmix64's finaliser: a cheap, well-distributed 64-bit mix.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The candidate id that `key` maps to: the one with the highest weight `mix(key, id)`.
/// Ties cannot change between calls, so the choice is stable.
pub fn choose(key: RouteKey, candidates: &[u64]) -> Option<u64> {
    choose_by(key, candidates, |&id| id).copied()
}

/// [`choose`] over any candidates, each identified by `id`.
pub fn choose_by<T>(key: RouteKey, candidates: &[T], id: impl Fn(&T) -> u64) -> Option<&T> {
    match key {
        RouteKey::Random if candidates.is_empty() => None,
        RouteKey::Random => candidates.get(fastrand::usize(..candidates.len())),
        RouteKey::Stable(key) => candidates.iter().max_by_key(|c| {
            let id = id(c);
            (mix(key ^ mix(id)), id)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_candidate_moves_only_its_own_keys() {
        let all: Vec<u64> = (1..=5).collect();
        let without_3: Vec<u64> = all.iter().copied().filter(|&id| id != 3).collect();
        let mut moved = 0;
        let mut share = [0u32; 6];
        for key in 0..10_000u64 {
            let before = choose(RouteKey::Stable(key), &all).unwrap();
            let after = choose(RouteKey::Stable(key), &without_3).unwrap();
            share[before as usize] += 1;
            if before != 3 {
                assert_eq!(before, after, "key {key} moved although its service stayed");
            } else {
                moved += 1;
            }
        }
        assert_eq!(moved, share[3]);
        // Roughly even shares: each of 5 gets 2000 ± 15 %.
        for (id, count) in share.iter().enumerate().skip(1) {
            assert!((1700..2300).contains(count), "share of {id}: {count}");
        }
    }

    #[test]
    fn the_choice_is_stable_and_independent_of_candidate_order() {
        let a = [10, 20, 30];
        let b = [30, 10, 20];
        for key in 0..1000 {
            assert_eq!(
                choose(RouteKey::Stable(key), &a),
                choose(RouteKey::Stable(key), &b)
            );
        }
        assert_eq!(choose(RouteKey::Stable(1), &[]), None);
        assert_eq!(choose(RouteKey::Random, &[]), None);
        assert!(a.contains(&choose(RouteKey::Random, &a).unwrap()));
    }

    #[test]
    fn source_ip_keys_group_edges_by_address() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let k1 = RouteKey::for_edge(HashBy::SrcIp, 1, Some(ip));
        let k2 = RouteKey::for_edge(HashBy::SrcIp, 2, Some(ip));
        assert_eq!(k1, k2);
        assert_eq!(
            RouteKey::for_edge(HashBy::EdgeId, 7, Some(ip)),
            RouteKey::Stable(7)
        );
        assert_eq!(
            RouteKey::for_edge(HashBy::Random, 7, None),
            RouteKey::Random
        );
    }
}
