//! The day `floe demo` plays: who the restaurants are, how many orders each
//! gets, what is in every basket and how every order ends. Pure and seeded:
//! the same arguments and seed give the same day, write for write.
//!
//! Sizes are skewed like a real platform's: about 2% of the tenants are
//! chains with 8-20x the average order count, 18% mid-sized, and the rest
//! small shops with a fraction of it. The total stays near `restaurants x
//! orders`, so the demo runs about as long as with even sizes; a chain's day
//! is cut into batches of at most `orders` orders that callers run side by
//! side, so one large tenant does not serialise the run.

use serde_json::{Value, json};

const CUISINES: [&str; 8] = [
    "thai", "pizza", "ramen", "tacos", "burgers", "sushi", "curry", "vegan",
];
const CITIES: [&str; 6] = ["Lisbon", "Austin", "Osaka", "Lagos", "Berlin", "Lima"];
const CHAINS: [&str; 6] = [
    "BurgerCo", "PizzaNow", "Wok&Go", "TacoTown", "SushiBar", "CurryHub",
];

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and good enough to
/// make a demo's choices; keyed per decision so the choices do not depend on
/// the order in which callers run.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw in `0..n` for decision `what` of `(a, b)`.
fn draw(seed: u64, what: u64, a: u64, b: u64, n: u64) -> u64 {
    mix(seed ^ mix(what ^ mix(a ^ mix(b)))) % n.max(1)
}

/// How large a tenant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Chain,
    Mid,
    Small,
}

impl Tier {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tier::Chain => "chain",
            Tier::Mid => "mid",
            Tier::Small => "small",
        }
    }
}

/// One restaurant (tenant).
#[derive(Debug, Clone)]
pub(crate) struct Shop {
    pub(crate) name: String,
    pub(crate) cuisine: &'static str,
    pub(crate) city: &'static str,
    pub(crate) tier: Tier,
    /// Menu prices in cents, one per item.
    pub(crate) prices: Vec<u32>,
    /// Orders of its day.
    pub(crate) orders: u32,
}

/// A run of one shop's orders, for one caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) shop: u32,
    pub(crate) first: u32,
    pub(crate) count: u32,
}

/// How an order ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Still waiting for the kitchen.
    Placed,
    Preparing,
    OutForDelivery,
    Delivered,
    /// Cancelled by the restaurant (kept, with its status).
    Cancelled,
    /// Delivered, then refunded.
    Refunded,
    /// Withdrawn by the customer: deleted.
    Withdrawn,
}

/// One order's basket and fate.
#[derive(Debug, Clone)]
pub(crate) struct OrderPlan {
    pub(crate) lines: Value,
    pub(crate) total_cents: u64,
    pub(crate) customer: String,
    pub(crate) outcome: Outcome,
    /// Minutes from order to door, when delivered.
    pub(crate) minutes: u64,
}

/// The whole day.
#[derive(Debug)]
pub(crate) struct Day {
    seed: u64,
    pub(crate) shops: Vec<Shop>,
    /// Every shop's orders cut into batches, interleaved so that the first
    /// half of the list holds about half of the writes.
    pub(crate) batches: Vec<Batch>,
}

impl Day {
    pub(crate) fn new(restaurants: u32, items: u32, orders: u32, seed: u64) -> Day {
        let restaurants = restaurants.max(1);
        // Weights in hundredths of the average.
        let weights: Vec<(Tier, u64)> = (0..restaurants)
            .map(|r| {
                let r = u64::from(r);
                match draw(seed, 1, r, 0, 100) {
                    0..2 => (Tier::Chain, 800 + draw(seed, 2, r, 0, 1201)),
                    2..20 => (Tier::Mid, 100 + draw(seed, 2, r, 0, 201)),
                    _ => (Tier::Small, 20 + draw(seed, 2, r, 0, 61)),
                }
            })
            .collect();
        let sum: u64 = weights.iter().map(|w| w.1).sum();
        let target = u64::from(restaurants) * u64::from(orders);
        let shops: Vec<Shop> = weights
            .iter()
            .enumerate()
            .map(|(r, &(tier, weight))| {
                let r64 = r as u64;
                let cuisine = CUISINES[draw(seed, 3, r64, 0, CUISINES.len() as u64) as usize];
                let city = CITIES[draw(seed, 4, r64, 0, CITIES.len() as u64) as usize];
                // Chains are cheaper; small shops spread widest.
                let (low, span) = match tier {
                    Tier::Chain => (600, 900),
                    Tier::Mid => (900, 1800),
                    Tier::Small => (700, 3300),
                };
                let prices = (0..items)
                    .map(|i| low + draw(seed, 5, r64, u64::from(i), span) as u32)
                    .collect();
                let name = match tier {
                    Tier::Chain => format!(
                        "{} {city} #{r}",
                        CHAINS[draw(seed, 6, r64, 0, CHAINS.len() as u64) as usize]
                    ),
                    _ => format!("{cuisine} place #{r}"),
                };
                let orders = if orders == 0 {
                    0
                } else {
                    ((weight * target + sum / 2) / sum.max(1)).max(1) as u32
                };
                Shop {
                    name,
                    cuisine,
                    city,
                    tier,
                    prices,
                    orders,
                }
            })
            .collect();
        let mut batches = Vec::new();
        let size = orders.max(1);
        let rounds = shops
            .iter()
            .map(|s| s.orders.div_ceil(size))
            .max()
            .unwrap_or(0);
        // Round by round (every shop's first batch, then every second
        // batch, ...) so halfway through the list is about halfway through
        // the work; a shop without orders still gets its profile and menu.
        for round in 0..rounds.max(1) {
            for (shop, s) in shops.iter().enumerate() {
                let first = round * size;
                if first < s.orders || (round == 0 && s.orders == 0) {
                    batches.push(Batch {
                        shop: shop as u32,
                        first,
                        count: (s.orders - first.min(s.orders)).min(size),
                    });
                }
            }
        }
        Day {
            seed,
            shops,
            batches,
        }
    }

    /// The namespace (tenant and partition key) of shop `shop`.
    pub(crate) fn namespace(&self, shop: u32) -> String {
        format!("restaurant-{shop:04}")
    }

    /// The shop with the most orders.
    pub(crate) fn largest(&self) -> u32 {
        (0..self.shops.len())
            .max_by_key(|&i| (self.shops[i].orders, std::cmp::Reverse(i)))
            .unwrap_or(0) as u32
    }

    /// One line about the day's shape.
    pub(crate) fn summary(&self) -> String {
        let count = |t: Tier| self.shops.iter().filter(|s| s.tier == t).count();
        let orders = |t: Tier| -> u64 {
            self.shops
                .iter()
                .filter(|s| s.tier == t)
                .map(|s| u64::from(s.orders))
                .sum()
        };
        let largest = &self.shops[self.largest() as usize];
        format!(
            "the day: {} chains ({} orders), {} mid-sized ({}), {} small shops ({}); largest {} ({}) with {} orders",
            count(Tier::Chain),
            orders(Tier::Chain),
            count(Tier::Mid),
            orders(Tier::Mid),
            count(Tier::Small),
            orders(Tier::Small),
            self.namespace(self.largest()),
            largest.name,
            largest.orders
        )
    }

    /// Order `order` of shop `shop`.
    pub(crate) fn order(&self, shop: u32, order: u32) -> OrderPlan {
        let (seed, s, o) = (self.seed, u64::from(shop), u64::from(order));
        let prices = &self.shops[shop as usize].prices;
        let mut lines = Vec::new();
        let mut total = 0u64;
        for line in 0..1 + draw(seed, 10, s, o, 3) {
            if prices.is_empty() {
                break;
            }
            let item = draw(seed, 11 + line, s, o, prices.len() as u64) as usize;
            let qty = 1 + draw(seed, 20 + line, s, o, 4);
            total += u64::from(prices[item]) * qty;
            lines.push(json!({ "item": format!("item-{item:02}"), "qty": qty }));
        }
        // A delivery fee on most orders.
        total += [0, 199, 299, 399][draw(seed, 30, s, o, 4) as usize];
        let outcome = match draw(seed, 31, s, o, 100) {
            0..62 => Outcome::Delivered,
            62..72 => Outcome::Cancelled,
            72..75 => Outcome::Refunded,
            75..83 => Outcome::Preparing,
            83..90 => Outcome::Placed,
            90..95 => Outcome::OutForDelivery,
            _ => Outcome::Withdrawn,
        };
        OrderPlan {
            lines: Value::Array(lines),
            total_cents: total,
            customer: format!("customer-{}", draw(seed, 32, s, o, 5000)),
            outcome,
            minutes: 12 + draw(seed, 33, s, o, 50),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_day_and_another_seed_another() {
        let a = Day::new(300, 10, 40, 7);
        let b = Day::new(300, 10, 40, 7);
        let c = Day::new(300, 10, 40, 8);
        let sizes = |d: &Day| d.shops.iter().map(|s| s.orders).collect::<Vec<_>>();
        assert_eq!(sizes(&a), sizes(&b));
        assert_eq!(a.batches, b.batches);
        assert_eq!(a.order(5, 3).total_cents, b.order(5, 3).total_cents);
        assert_ne!(sizes(&a), sizes(&c));
    }

    #[test]
    fn sizes_are_skewed_but_the_total_stays_near_the_even_day() {
        let day = Day::new(1000, 10, 40, 7);
        let total: u64 = day.shops.iter().map(|s| u64::from(s.orders)).sum();
        assert!((38_000..=42_000).contains(&total), "{total}");
        let mut sizes: Vec<u32> = day.shops.iter().map(|s| s.orders).collect();
        sizes.sort_unstable();
        let (smallest, median, largest) = (sizes[0], sizes[500], sizes[999]);
        assert!(largest >= 10 * median, "{largest} vs median {median}");
        assert!(median < 40 && smallest >= 1, "{smallest} {median}");
        // The top 2% of tenants hold a large share of the orders.
        let top: u64 = sizes[980..].iter().map(|&s| u64::from(s)).sum();
        assert!(top * 100 / total >= 15, "{top} of {total}");
        // Batches cover every order exactly once and none is larger than
        // the average day.
        let mut seen = HashSet::new();
        for b in &day.batches {
            assert!(b.count <= 40);
            for o in b.first..b.first + b.count {
                assert!(seen.insert((b.shop, o)));
            }
        }
        assert_eq!(seen.len() as u64, total);
    }

    #[test]
    fn orders_end_in_every_state_and_revenue_differs() {
        let day = Day::new(200, 10, 40, 7);
        let mut outcomes = HashSet::new();
        let mut totals = HashSet::new();
        for b in &day.batches {
            for o in b.first..b.first + b.count {
                let plan = day.order(b.shop, o);
                outcomes.insert(format!("{:?}", plan.outcome));
                totals.insert(plan.total_cents);
            }
        }
        assert_eq!(outcomes.len(), 7, "{outcomes:?}");
        assert!(totals.len() > 500, "{}", totals.len());
    }
}
