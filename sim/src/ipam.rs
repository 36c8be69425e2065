//! Overlay IPAM as swarmkit's allocator does it: serial allocation within a subnet that loses
//! its network, gateway and broadcast addresses.

use std::net::Ipv4Addr;

#[derive(Debug, Clone)]
pub struct Pool {
    pub base: u32,
    pub prefix: u8,
    size: u32,
    used: Vec<u64>,
    in_use: u32,
    cursor: u32,
}

/// A subnet the simulator cannot model: not `A.B.C.D/P` with P in 8..=30.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid subnet {subnet}: expected an IPv4 A.B.C.D/P with a prefix P of 8 to 30")]
pub struct SubnetError {
    pub subnet: String,
}

impl Pool {
    /// A pool for `subnet` ("10.0.1.0/24"). The network (offset 0), the gateway (offset 1) and
    /// the broadcast address are reserved.
    pub fn new(subnet: &str) -> Result<Pool, SubnetError> {
        let invalid = || SubnetError {
            subnet: subnet.to_string(),
        };
        let (ip, prefix) = subnet.split_once('/').ok_or_else(invalid)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        if !(8..=30).contains(&prefix) {
            return Err(invalid());
        }
        let size = 1u32 << (32 - prefix);
        let base = u32::from(ip) & !(size - 1);
        let mut p = Pool {
            base,
            prefix,
            size,
            used: vec![0; size.div_ceil(64) as usize],
            in_use: 0,
            cursor: 2,
        };
        p.mark(0);
        p.mark(1);
        p.mark(size - 1);
        p.in_use = 0;
        Ok(p)
    }

    fn mark(&mut self, off: u32) {
        self.used[(off / 64) as usize] |= 1 << (off % 64);
    }

    fn is_used(&self, off: u32) -> bool {
        self.used[(off / 64) as usize] & (1 << (off % 64)) != 0
    }

    /// Usable addresses: the subnet minus network, gateway and broadcast.
    pub fn capacity(&self) -> u32 {
        self.size - 3
    }

    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    pub fn free(&self) -> u32 {
        self.capacity() - self.in_use
    }

    /// Allocates the next free address after the last one allocated (wrapping), as libnetwork's
    /// serial allocator does for swarm networks.
    pub fn alloc(&mut self) -> Option<u32> {
        if self.free() == 0 {
            return None;
        }
        for i in 0..self.size {
            let off = (self.cursor + i) % self.size;
            if !self.is_used(off) {
                self.mark(off);
                self.in_use += 1;
                self.cursor = (off + 1) % self.size;
                return Some(off);
            }
        }
        None
    }

    pub fn release(&mut self, off: u32) {
        if off > 1 && off < self.size - 1 && self.is_used(off) {
            self.used[(off / 64) as usize] &= !(1 << (off % 64));
            self.in_use -= 1;
        }
    }

    pub fn ip(&self, off: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + off)
    }

    /// "10.0.1.5/24"
    pub fn cidr(&self, off: u32) -> String {
        format!("{}/{}", self.ip(off), self.prefix)
    }

    /// Does this pool's subnet share an address with `base/prefix`?
    pub fn overlaps(&self, base: u32, prefix: u8) -> bool {
        let size = 1u64 << (32 - prefix);
        let (a0, a1) = (self.base as u64, self.base as u64 + self.size as u64);
        let (b0, b1) = (base as u64, base as u64 + size);
        a0 < b1 && b0 < a1
    }

    pub fn subnet(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }

    pub fn gateway(&self) -> String {
        self.ip(1).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash27_has_29_usable() {
        let mut p = Pool::new("10.231.0.0/27").unwrap();
        assert_eq!(p.capacity(), 29);
        assert_eq!(p.gateway(), "10.231.0.1");
        let mut got = vec![];
        while let Some(a) = p.alloc() {
            got.push(a);
        }
        assert_eq!(got.len(), 29);
        assert_eq!(p.cidr(got[0]), "10.231.0.2/27");
        assert_eq!(p.cidr(*got.last().unwrap()), "10.231.0.30/27");
        p.release(got[3]);
        assert_eq!(p.free(), 1);
        assert_eq!(p.alloc(), Some(got[3]));
        assert!(Pool::new("10.0.0.0/31").is_err());
    }
}
