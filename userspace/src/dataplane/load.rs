//! Loading the XDP object into the kernel and attaching it to interfaces.

use std::collections::HashMap as StdHashMap;

use aya::{
    programs::{ProgramError, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use veer_abi::{
    names, JUMP_NAT, JUMP_NAT_COOKIE, JUMP_NAT_RETURN, NAT_COOKIE_PROGRAM, NAT_PROGRAM, NAT_RETURN_PROGRAM,
    PROGRAM_NAME,
};

use super::{map_layout, Dataplane, DataplaneError, DataplaneOptions, Result};

/// The XDP object veer was built with.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("VEER_XDP_OBJ"));

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native XDP in the driver (the default; fastest).
    #[default]
    Driver,
    /// Generic XDP on the skb (any interface; slower).
    Skb,
}

impl From<AttachMode> for XdpMode {
    fn from(m: AttachMode) -> Self {
        match m {
            AttachMode::Driver => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

/// Runs a program load `load`, again while the kernel answers `EAGAIN`
/// (up to five times, as libbpf does): the verifier gives up with it when
/// a signal is pending for the loading thread (a child process exiting, in
/// a process with a SIGCHLD handler), and a large program's verification
/// is long enough to meet one.
pub(super) fn retrying_eagain(
    mut load: impl FnMut() -> std::result::Result<(), ProgramError>,
) -> std::result::Result<(), ProgramError> {
    let mut tries = 1;
    loop {
        match load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < 5 =>
            {
                tracing::debug!(tries, "the verifier gave up with EAGAIN (a signal pending); loading again");
                tries += 1;
            }
            r => return r,
        }
    }
}

/// Loads the programs the entry program tail-calls and puts them in `JUMPS`
/// (replacing what a previous daemon put there, when the map is adopted).
fn load_continuations(ebpf: &mut Ebpf) -> Result<()> {
    use aya::maps::ProgramArray;
    let mut fds = Vec::new();
    let programs = [
        (JUMP_NAT, NAT_PROGRAM),
        (JUMP_NAT_RETURN, NAT_RETURN_PROGRAM),
        (JUMP_NAT_COOKIE, NAT_COOKIE_PROGRAM),
        (veer_abi::JUMP_NAT_COOKIE_RETURN, veer_abi::NAT_COOKIE_RETURN_PROGRAM),
        (veer_abi::JUMP_SECOND_CHANCE, veer_abi::SECOND_CHANCE_PROGRAM),
        (veer_abi::JUMP_TUNNEL_RETURN, veer_abi::TUNNEL_RETURN_PROGRAM),
    ]
    .into_iter()
    .chain(veer_abi::NAT_ICMP_PROGRAMS);
    for (slot, name) in programs {
        let p: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(DataplaneError::Missing { kind: "program", name })?
            .try_into()
            .map_err(DataplaneError::program(format!("program {name} is not XDP")))?;
        retrying_eagain(|| p.load())
            .map_err(DataplaneError::program(format!("loading {name} into the kernel (verifier)")))?;
        let fd = p.fd().map_err(DataplaneError::program(format!("{name}'s descriptor")))?.try_clone().map_err(|e| {
            DataplaneError::Program { what: format!("{name}'s descriptor"), source: Box::new(e.into()) }
        })?;
        fds.push((slot, fd));
    }
    let map = ebpf.map_mut(names::JUMPS).ok_or(DataplaneError::Missing { kind: "map", name: names::JUMPS })?;
    let mut jumps = ProgramArray::try_from(map).map_err(DataplaneError::map(names::JUMPS, "opening"))?;
    for (slot, fd) in &fds {
        jumps.set(*slot, fd, 0).map_err(DataplaneError::map(names::JUMPS, format!("setting slot {slot}")))?;
    }
    Ok(())
}

impl Dataplane {
    /// Loads the embedded XDP object with default sizes (not yet attached).
    pub fn load() -> Result<Self> {
        Self::load_with(XDP_OBJECT, &DataplaneOptions::default())
    }

    /// Loads an XDP object with the given sizes (not yet attached).
    pub fn load_with(object: &[u8], opts: &DataplaneOptions) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        Self::load_object(&mut loader, object, opts)
    }

    pub(super) fn load_object(loader: &mut EbpfLoader<'_>, object: &[u8], opts: &DataplaneOptions) -> Result<Self> {
        let svc = opts.max_services;
        for m in map_layout(opts) {
            loader.map_max_entries(m.name, m.max_entries);
        }
        let mut ebpf = loader.load(object).map_err(|e| DataplaneError::Load(Box::new(e)))?;
        let prog = Self::xdp(&mut ebpf)?;
        retrying_eagain(|| prog.load())
            .map_err(DataplaneError::program("loading the XDP program into the kernel (verifier)"))?;
        load_continuations(&mut ebpf)?;
        Ok(Self {
            ebpf,
            max_services: svc,
            max_backends: opts.max_backends,
            attached: StdHashMap::new(),
            held_links: Vec::new(),
            fresh_rings: false,
        })
    }

    /// The entry program of `ebpf`, to load, attach or detach.
    pub(super) fn xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
        let p =
            ebpf.program_mut(PROGRAM_NAME).ok_or(DataplaneError::Missing { kind: "program", name: PROGRAM_NAME })?;
        p.try_into().map_err(DataplaneError::program("program veer_xdp is not XDP"))
    }

    /// Attaches the VIP-path TC egress program to `iface` (TCX, Linux 6.6+;
    /// it detaches when this dataplane is dropped: VIP-path checks run only
    /// while veerd does).
    pub fn attach_vip_path(&mut self, iface: &str) -> Result<()> {
        use aya::programs::{tc::TcAttachType, SchedClassifier};
        let name = veer_abi::VIP_PATH_PROGRAM;
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or(DataplaneError::Missing { kind: "program", name })?
            .try_into()
            .map_err(DataplaneError::program("veer_vip_path is not a TC program"))?;
        if prog.fd().is_err() {
            retrying_eagain(|| prog.load())
                .map_err(DataplaneError::program("loading veer_vip_path into the kernel (verifier)"))?;
        }
        prog.attach(iface, TcAttachType::Egress)
            .map_err(DataplaneError::program(format!("attaching veer_vip_path to {iface}'s egress")))?;
        Ok(())
    }

    /// Attaches to `iface` (in the calling thread's network namespace).
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<()> {
        let prog = Self::xdp(&mut self.ebpf)?;
        let id = prog
            .attach(iface, mode.into())
            .map_err(DataplaneError::program(format!("attaching to {iface} in {mode:?} mode")))?;
        self.attached.insert(iface.to_string(), id);
        Ok(())
    }

    /// Detaches from `iface`.
    pub fn detach(&mut self, iface: &str) -> Result<()> {
        let id = self.attached.remove(iface).ok_or_else(|| DataplaneError::NotAttached(iface.into()))?;
        Self::xdp(&mut self.ebpf)?.detach(id).map_err(DataplaneError::program(format!("detaching from {iface}")))
    }

    /// Interfaces the program is attached to by this handle.
    pub fn attached(&self) -> impl Iterator<Item = &str> {
        self.attached.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

    use super::XDP_OBJECT;

    /// The XDP programs (their sections, and `.text` with the functions
    /// they call) never call the byte loops bpf-linker exports for what
    /// LLVM does not expand (`memset`, `memmove`): one per zeroed struct
    /// tail or map-to-map copy cost up to 160 instructions and a call.
    /// The TC health-check program (`classifier`) may.
    #[test]
    fn the_xdp_programs_call_no_byte_loop() {
        let obj = object::File::parse(XDP_OBJECT).expect("the embedded XDP object parses");
        let mut calls = Vec::new();
        for section in obj.sections().filter(|s| s.name().is_ok_and(|n| n != "classifier")) {
            for (at, reloc) in section.relocations() {
                let RelocationTarget::Symbol(i) = reloc.target() else { continue };
                let name = obj.symbol_by_index(i).ok().and_then(|s| s.name().ok().map(str::to_owned));
                if let Some(name) =
                    name.filter(|n| ["memset", "memmove", "memcpy", "memcmp", "bcmp"].contains(&n.as_str()))
                {
                    calls.push(format!("{} at {at:#x}: {name}", section.name().unwrap_or("?")));
                }
            }
        }
        assert!(obj.sections().count() > 3, "the object has its program sections");
        assert!(calls.is_empty(), "byte-loop calls in the XDP programs: {calls:#?}");
    }
}
