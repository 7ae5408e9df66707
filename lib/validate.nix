# Every rule the config must satisfy, as data: `{ errors; warnings; }` lists of `{ path; message; }`, all problems
# at once. Checks are per value or grouped with builtins.groupBy, so the cost stays linear in the member count.
let
  u = import ./util.nix;
  cozystack = import ./cozystack.nix;
  inherit (u) problem show quoteList;
  inherit (builtins)
    all attrNames attrValues catAttrs concatLists concatMap elem filter groupBy head isAttrs isBool isInt isList
    isString length match stringLength tail typeOf;

  opt = cond: p: if cond then [ p ] else [ ];

  knownExtensions = [ "nvidia" "drbd" "zfs" "monitoring" ];
  nvidiaChannels = [ "stable" "beta" "production" "latest" ];
  versionRe = "v1\\.[0-9]+\\.[0-9]+\\+k3s[0-9]+";
  sizeRe = "[1-9][0-9]*[KMGT]";

  checkIPv4 = segs: what: v:
    if v == null then [ (problem segs "${what} is missing; set it to an IPv4 address such as \"192.168.1.10\"") ]
    else opt (!u.isIPv4 v) (problem segs "${show v} is not an IPv4 address; write four decimal octets such as \"192.168.1.10\"");

  checkOptIPv4 = segs: v: if v == null then [ ] else checkIPv4 segs "" v;

  checkCIDR = segs: v:
    if v == null then [ ]
    else
      let c = u.parseCIDR v; in
      if c == null then [ (problem segs "${show v} is not an IPv4 CIDR; write it as address/prefix, such as \"10.42.0.0/16\"") ]
      else opt c.hostBitsSet (problem segs "${show v} has host bits set; the network is \"${u.intToIp c.network}/${toString c.prefix}\"");

  checkStringList = segs: v:
    opt (v != null && !(isList v && all isString v)) (problem segs "must be a list of strings, got ${show v}");

  checkAttrs = segs: v:
    opt (v != null && !(isAttrs v && !(u.isNixOnly v))) (problem segs "must be an attribute set, got ${show v}");

  # Node-template fields; used for templates and again for each member's overrides (prefix differs). Checks are
  # looked up by the keys present, so a member overriding only network.mac costs one check, not six.
  nodeChecks = {
    network = segs: c:
      let v = c.network.mac or null; in
      if v != null && !(u.isMAC v) then [ (problem (segs ++ [ "network" "mac" ]) "${show v} is not a MAC address; write six hex pairs separated by colons, such as \"aa:bb:cc:dd:ee:01\"") ] else [ ];
    install = segs: c:
      (let d = c.install.disk or null; in
        opt (d != null && !(isString d && match "/dev/.+" d != null))
          (problem (segs ++ [ "install" "disk" ]) "${show d} is not a block device path; use a path under /dev such as \"/dev/sda\" or \"/dev/disk/by-id/...\""))
      ++ (let s = c.install.swapSize or null; in
        opt (s != null && !(isString s && match sizeRe s != null))
          (problem (segs ++ [ "install" "swapSize" ]) "${show s} is not a size; write a number with a unit K, M, G or T, such as \"16G\""));
    hardware = segs: c:
      let v = c.hardware.cpu.vendor or null; in
      opt (v != null && !(elem v [ "intel" "amd" ]))
        (problem (segs ++ [ "hardware" "cpu" "vendor" ]) "${show v} is not a CPU vendor; use \"intel\" or \"amd\"");
    extensions = segs: c:
      (let ch = c.extensions.nvidia.package or null; in
        opt (ch != null && !(elem ch nvidiaChannels))
          (problem (segs ++ [ "extensions" "nvidia" "package" ]) "${show ch} is not an NVIDIA driver channel; use one of ${quoteList nvidiaChannels}"))
      ++ checkStringList (segs ++ [ "extensions" "drbd" "devices" ]) (c.extensions.drbd.devices or null);
    boot = segs: c:
      checkStringList (segs ++ [ "boot" "kernelParams" ]) (c.boot.kernelParams or null)
      ++ checkStringList (segs ++ [ "boot" "kernelModules" ]) (c.boot.kernelModules or null);
    disko = segs: c:
      let d = c.disko; in
      opt (d != null && !(isAttrs d && isAttrs (d.devices or null)))
        (problem (segs ++ [ "disko" ]) "custom disko config must be an attribute set with a \"devices\" attribute (disko's own format)");
  };
  checkNodeConfig = segs: c: concatMap (k: if nodeChecks ? ${k} then nodeChecks.${k} segs c else [ ]) (attrNames c);

  bothDisks = c: ((c.install.disk or null) != null) && (c.disko or null) != null;

  nodeProblems = name: n:
    let segs = [ "nodes" name ]; in
    if !(isAttrs n) || u.isNixOnly n then { errors = [ (problem segs "must be an attribute set describing the node, got ${show n}") ]; warnings = [ ]; }
    else {
      errors = checkNodeConfig segs n
        ++ opt (bothDisks n) (problem (segs ++ [ "disko" ]) "install.disk and disko are mutually exclusive; keep install.disk for the standard layout or disko for a custom one");
      warnings = concatMap (e: opt (!(elem e knownExtensions))
        (problem (segs ++ [ "extensions" e ]) "unknown extension; the built-in ones are ${quoteList knownExtensions} (an extension module of your own may read it)"))
        (attrNames (if isAttrs (n.extensions or null) then n.extensions else { }));
    };

  memberProblems = m: model: c:
    let
      segs = [ "clusters" c.name "members" m.name ];
      nodeErr =
        if m.refKind == "missing" then [ (problem (segs ++ [ "node" ]) "is missing; set it to one of the node templates: ${quoteList model.nodeNames}") ]
        else if m.refKind == "unknown" then [ (problem (segs ++ [ "node" ]) "no node named ${show m.ref}; known nodes: ${quoteList model.nodeNames}") ]
        else if m.refKind == "invalid" then [ (problem (segs ++ [ "node" ]) "must be a node name (string) or a node template (attribute set), got ${show m.ref}") ]
        else [ ];
      # This runs for every member: plain ifs rather than opt and checkIPv4, whose curried calls add up.
      roleErr =
        if m.role == "server" || m.role == "agent" then [ ]
        else if m.role == null then [ (problem (segs ++ [ "role" ]) "is missing; set it to \"server\" or \"agent\"") ]
        else [ (problem (segs ++ [ "role" ]) "${show m.role} is not a role; use \"server\" or \"agent\"") ];
      nameErr =
        if !(u.isLabel m.name) then [ (problem segs "member name ${show m.name} is not a valid host name; use lowercase letters, digits and \"-\", starting and ending with a letter or digit") ]
        else if stringLength m.hostName > 63 then [ (problem segs "host name ${show m.hostName} is ${toString (stringLength m.hostName)} characters long; <cluster>-<member> must be at most 63, shorten the member or cluster name") ]
        else [ ];
      mergedErr =
        if m.overrides != { } && bothDisks m.config && !(m.refKind != "missing" && bothDisks m.template) then
          [ (problem segs "after merging node ${show (if m.nodeName != null then m.nodeName else "(inline)")} with this member's overrides both install.disk and disko are set; they are mutually exclusive, override one of them with null or drop one") ]
        else [ ];
      ipErr =
        if u.isIPv4 m.ip then (if c.vip != null && m.ip == c.vip then [ (problem (segs ++ [ "ip" ]) "${show m.ip} is also the cluster's ha.vip; the VIP must be an address no member uses") ] else [ ])
        else checkIPv4 (segs ++ [ "ip" ]) "ip" m.ip;
    in
    if !m.isAttrs then { errors = [ (problem segs "must be an attribute set with node, role and ip, got ${show m.raw}") ]; warnings = [ ]; }
    else {
      errors = nodeErr ++ roleErr ++ nameErr ++ ipErr
        # Only the member's own overrides are checked here; the template's values are reported under nodes.
        ++ (if m.overrides == { } then [ ] else checkNodeConfig segs m.overrides) ++ mergedErr;
      warnings =
        if m.config != { } && (m.config.install.disk or null) == null && (m.config.disko or null) == null then
          [ (problem segs "neither install.disk nor disko is set: the system gets no disk layout; set one, or declare fileSystems in nixosModules") ]
        else [ ];
    };

  # Members whose `key` collide: every member after the first (alphabetically) gets an error.
  duplicates = items: key: mkProblem:
    let groups = groupBy key items; in
    concatMap (k: let g = groups.${k}; in map (x: mkProblem x (head g)) (tail g))
      (filter (k: length groups.${k} > 1) (attrNames groups));

  # ---- the common case in one pass ---------------------------------------------------------------------------------
  # The checks above build a member's problem lists with several calls per member. A large cluster is usually
  # clean, so a cluster is first tested as a whole, with builtins over lists of the members' fields and no
  # function call per member; only when that test fails do the per-member checks run, and they find and word
  # every problem, so the result is the same either way. Each test here may refuse a clean cluster (then the
  # per-member checks find nothing), never accept one with a problem.

  # No two of these strings (keyed by `key`, a builtin) are equal: then no subset of them has a duplicate either.
  # (attrValues, unlike attrNames, makes no new string per key.)
  distinct = key: xs: length (attrValues (groupBy key xs)) == length xs;

  # MACs compare in lower case; for hex digits only A-F change (valid MACs are all the duplicate check sees).
  # MACs are usually written in lower case, and then they compare as they are: lowering each costs more.
  hexLower = builtins.replaceStrings [ "A" "B" "C" "D" "E" "F" ] [ "a" "b" "c" "d" "e" "f" ];
  lowerMacRe = let h = "[0-9a-f]{2}"; in "${h}:${h}:${h}:${h}:${h}:${h}";

  noNulls = xs: !(elem null xs);

  # Member names that are host name labels and short enough for "<cluster>-<member>" (at most 63 characters).
  nameRe = c:
    let max = 62 - stringLength c.name; in
    if max >= 2 then "[a-z0-9]|[a-z0-9][-a-z0-9]{0,${toString (max - 2)}}[a-z0-9]" else null;

  # The overrides members make, grouped by key (`{ network = [ { mac = ...; } ... ]; }`): network.mac, the usual
  # one, is tested as one list; other keys with node checks run them on each value; install and disko, which
  # change what the merge checks and the disk warning see, take the per-member way. In a config from JSON a string
  # network.mac of an override is the member's MAC (it replaces the template's), so macsValid (every member's MAC
  # string is a valid MAC) tests it with no second regex per member; in Nix a Nix-only `network` would not be.
  overridesClean = model: macsValid: ms:
    let byKey = builtins.zipAttrsWith (_: vs: vs) (catAttrs "overrides" ms); in
    all (k: let vs = byKey.${k}; in
      if k == "network" then
        (let macs = catAttrs "mac" (filter isAttrs vs); in
          all isString macs && (if model.dataInput then macsValid else noNulls (map (match u.macRe) macs)))
      else if k == "install" || k == "disko" then false
      else if nodeChecks ? ${k} then all (v: nodeChecks.${k} [ ] { ${k} = v; } == [ ]) vs
      else true) (attrNames byKey);

  # No member has an error or a warning of memberProblems (the IP duplicates are checked apart).
  membersClean = model: macsValid: c: ms:
    let
      ips = catAttrs "ip" ms;
      re = nameRe c;
      refs = catAttrs "ref" ms;
      # Templates whose data has no disk layout: their members get the disk warning.
      diskless = filter (n: let t = model.nodesData.${n}; in !(isAttrs t) || (t.install.disk or null) == null && (t.disko or null) == null) model.nodeNames;
    in
    !(elem false (catAttrs "isAttrs" ms))
    && length c.servers + length c.agents == length ms
    && all isString refs && !(elem "unknown" (catAttrs "refKind" ms))
    && re != null && noNulls (map (match re) c.names)
    && all isString ips && noNulls (map (match u.ipv4Re) ips) && !(elem c.vip ips)
    && all (n: !(elem n refs)) diskless
    && overridesClean model macsValid ms;

  # Secret values written into a cluster (secrets.token, secrets.agentToken): a warning in the config of a flake or
  # a file, which may accept the risk; an error in the inventory nix8sd stores (`stored`, core.checkStored), which
  # any read token can read and which is rendered into a flake workspace.
  secretValues = stored: segs: secrets:
    concatMap (k: opt ((secrets.${k} or null) != null) (problem (segs ++ [ "secrets" k ]) (
      if stored then
        "nix8sd does not store secret values (any read token reads the inventory, and it is rendered into a flake workspace): keep ${if k == "token" then "the cluster token" else "the agent token"} in a file on the node and set secrets.${k}File to its path (sops-nix, agenix), or remove secrets.${k} and let nix8s generate and deliver the tokens (nix8s gen-secrets)"
      else
        "a secret value set in the config lands in the world-readable Nix store; use secrets.${k}File with a file delivered to the node (nix8s gen-secrets, sops-nix)")))
      [ "token" "agentToken" ];

  clusterProblems = model: macsValid: c:
    let
      segs = [ "clusters" c.name ];
      ms = c.memberList;
      clean = membersClean model macsValid c ms;
      valid = filter (m: m.isAttrs) ms;
      k3s = c.k3s;
      netw = if isAttrs (k3s.network or null) then k3s.network else { };
      svc = u.parseCIDR (netw.serviceCidr or null);
      mp = map (m: memberProblems m model c) ms;
      withIP = filter (m: u.isIPv4 m.ip) valid;
      ha = c.ha;
      secrets = c.secrets;
      cnet = if isAttrs (c.raw.network or null) then c.raw.network else { };
      stored = model.stored or false;
    in {
      errors = concatLists [
        (opt (!(u.isLabel c.name)) (problem segs "cluster name ${show c.name} is not a valid host name prefix; use lowercase letters, digits and \"-\""))
        (opt (c.names == [ ]) (problem (segs ++ [ "members" ]) "the cluster has no members; add at least one member with role \"server\""))
        (opt (c.names != [ ] && c.servers == [ ]) (problem (segs ++ [ "members" ]) "the cluster has no server; give at least one member role \"server\""))
        (let v = k3s.version or null; in
          opt (v != null && !(isString v && match versionRe v != null))
            (problem (segs ++ [ "k3s" "version" ]) "${show v} is not a k3s release; write it as in k3s's release names, such as \"v1.34.2+k3s1\""))
        (checkCIDR (segs ++ [ "k3s" "network" "clusterCidr" ]) (netw.clusterCidr or null))
        (checkCIDR (segs ++ [ "k3s" "network" "serviceCidr" ]) (netw.serviceCidr or null))
        (let d = netw.clusterDns or null; in
          if d == null then [ ]
          else if !(u.isIPv4 d) then checkIPv4 (segs ++ [ "k3s" "network" "clusterDns" ]) "clusterDns" d
          else opt (svc != null && !(u.cidrContains svc d))
            (problem (segs ++ [ "k3s" "network" "clusterDns" ]) "${show d} is outside serviceCidr ${show netw.serviceCidr}; pick an address inside it, such as \"${u.intToIp (svc.network + 10)}\""))
        (checkStringList (segs ++ [ "k3s" "extraArgs" "server" ]) ((k3s.extraArgs.server or null)))
        (checkStringList (segs ++ [ "k3s" "extraArgs" "agent" ]) ((k3s.extraArgs.agent or null)))
        (checkAttrs (segs ++ [ "ha" ]) (c.raw.ha or null))
        (let e = ha.enable or null; in opt (e != null && !isBool e) (problem (segs ++ [ "ha" "enable" ]) "must be true or false, got ${show e}"))
        (opt (c.haEnable && length c.servers > 1 && !(isString (ha.vip or null)))
          (problem (segs ++ [ "ha" "vip" ]) "HA with ${toString (length c.servers)} servers needs a virtual IP that moves between them; set ha.vip to a free address in the servers' subnet"))
        (checkOptIPv4 (segs ++ [ "ha" "vip" ]) (ha.vip or null))
        (let f = ha.firstServer or null; in
          opt (f != null && !(elem f c.servers))
            (problem (segs ++ [ "ha" "firstServer" ]) "${show f} is not a server member of this cluster; server members: ${quoteList c.servers}"))
        (let lb = ha.loadBalancer or null; in
          opt (lb != null && !(elem lb [ "keepalived" "external" ]))
            (problem (segs ++ [ "ha" "loadBalancer" ]) "${show lb} is not supported; use \"keepalived\" (keepalived + haproxy on the servers) or \"external\""))
        (let p = cnet.prefixLength or null; in
          opt (p != null && !(isInt p && p >= 1 && p <= 32)) (problem (segs ++ [ "network" "prefixLength" ]) "must be a whole number from 1 to 32, got ${show p}"))
        (checkOptIPv4 (segs ++ [ "network" "gateway" ]) (cnet.gateway or null))
        (let ns = cnet.nameservers or null; in
          if ns == null then [ ] else if !(isList ns) then checkStringList (segs ++ [ "network" "nameservers" ]) ns
          else concatLists (builtins.genList (i: checkOptIPv4 (segs ++ [ "network" "nameservers" (toString i) ]) (builtins.elemAt ns i)) (length ns)))
        (concatMap (k: let f = secrets.${k} or null; in
          opt (f != null && !(isString f && match "/.*" f != null))
            (problem (segs ++ [ "secrets" k ]) "must be an absolute path on the node (such as \"/run/secrets/k3s-token\"), got ${show f}"))
          [ "tokenFile" "agentTokenFile" ])
        (if stored then secretValues true segs secrets else [ ])
        (if clean then [ ] else concatMap (x: x.errors) mp)
        (if distinct toString (filter isString (catAttrs "ip" ms)) then [ ] else duplicates withIP (m: m.ip) (m: first:
          problem [ "clusters" c.name "members" m.name "ip" ] "${show m.ip} is also the ip of member ${show first.name}; every member needs its own address"))
      ];
      warnings = concatLists [
        (if clean then [ ] else concatMap (x: x.warnings) mp)
        (opt (!c.haEnable && length c.servers > 1)
          (problem (segs ++ [ "ha" "enable" ]) "${toString (length c.servers)} servers but ha.enable is false: everything joins through ${show c.firstServer}, which stays a single point of failure; set ha.enable and ha.vip"))
        (if stored then [ ] else secretValues false segs secrets)
      ];
    };

  provisioningProblems = p:
    let
      pxe = (p.pxe.server or { });
      dhcp = if isAttrs (pxe.dhcp or null) then pxe.dhcp else { };
      base = [ "provisioning" "pxe" "server" ];
      subnet = u.parseCIDR (dhcp.subnet or null);
      range = dhcp.range or null;
      rangeParts = if isString range then match "([^-]+)-([^-]+)" range else null;
      ssh = (p.nixos-anywhere.ssh or { });
      port = if isAttrs ssh then ssh.port or null else null;
      keys = (p.ssh.authorizedKeys or null);
    in concatLists [
      (checkOptIPv4 (base ++ [ "ip" ]) (pxe.ip or null))
      (let a = p.pxe.approve or null; in
        opt (a != null && !(elem a [ "none" "servers" "all" ]))
          (problem [ "provisioning" "pxe" "approve" ] "${show a} is not an approval setting; use \"servers\" (the default: a network-installed server gets its secrets only after POST /v1/machines/{mac}/approve confirms its host key), \"all\" (every member waits for that) or \"none\" (secrets go to whichever host key the installer reports)"))
      (checkCIDR (base ++ [ "dhcp" "subnet" ]) (dhcp.subnet or null))
      (checkOptIPv4 (base ++ [ "dhcp" "gateway" ]) (dhcp.gateway or null))
      (let mode = dhcp.mode or null; in
        if mode == null || mode == "proxy" then [ ]
        else if mode != "full" then
          [ (problem (base ++ [ "dhcp" "mode" ]) "${show mode} is not a DHCP mode; use \"proxy\" (beside the site's DHCP server, hands out no addresses) or \"full\" (leases addresses from dhcp.range)") ]
        else concatMap (k: opt ((dhcp.${k} or null) == null)
          (problem (base ++ [ "dhcp" k ]) "is missing; DHCP mode \"full\" leases addresses from dhcp.range inside dhcp.subnet, so set both (such as \"${if k == "range" then "192.168.1.100-192.168.1.200" else "192.168.1.0/24"}\"), or use mode \"proxy\""))
          [ "range" "subnet" ])
      (if range == null then [ ]
       else if rangeParts == null || !(all u.isIPv4 rangeParts) then
         [ (problem (base ++ [ "dhcp" "range" ]) "${show range} is not an address range; write it as \"<first>-<last>\", such as \"192.168.1.100-192.168.1.200\"") ]
       else
         let first = builtins.elemAt rangeParts 0; last = builtins.elemAt rangeParts 1; in
         if u.ipToInt (u.parseIPv4 first) > u.ipToInt (u.parseIPv4 last) then
           [ (problem (base ++ [ "dhcp" "range" ]) "${show range} starts after it ends; write the lower address first: \"${last}-${first}\"") ]
         else opt (subnet != null && !(all (u.cidrContains subnet) rangeParts))
           (problem (base ++ [ "dhcp" "range" ]) "${show range} is not inside dhcp.subnet ${show dhcp.subnet}"))
      (let g = dhcp.gateway or null; in
        opt (subnet != null && u.isIPv4 g && !(u.cidrContains subnet g))
          (problem (base ++ [ "dhcp" "gateway" ]) "${show g} is outside dhcp.subnet ${show dhcp.subnet}; DHCP clients can only reach a router on their own network: set gateway to the router's address in the subnet, or fix the subnet"))
      (opt (port != null && !(isInt port && port >= 1 && port <= 65535))
        (problem [ "provisioning" "nixos-anywhere" "ssh" "port" ] "must be a port number from 1 to 65535, got ${show port}"))
      # The plan's per-member ssh endpoint takes these as they are, so what ssh cannot use is refused here.
      (checkAttrs [ "provisioning" "nixos-anywhere" "ssh" ] (p.nixos-anywhere.ssh or null))
      (concatMap (k: let v = if isAttrs ssh then ssh.${k} or null else null; in
        opt (v != null && !(isString v && v != ""))
          (problem [ "provisioning" "nixos-anywhere" "ssh" k ] "must be a non-empty string (${if k == "user" then "the login user, such as \"root\"" else "the path of a private key on the operator's machine"}), got ${show v}"))
        [ "user" "keyFile" ])
      (checkStringList [ "provisioning" "ssh" "authorizedKeys" ] keys)
    ];
in
model:
let
  lima = import ./lima.nix model;
  np = map (n: nodeProblems n model.nodes.${n}) model.nodeNames;
  cp = map (clusterProblems model (validMACs != null)) (attrValues model.clusters);
  # Cozystack's rules (lib/cozystack.nix), per cluster; nothing to do for a cluster without a cozystack section.
  zp = map (cozystack.problems model) (attrValues model.clusters);
  allMembers = concatMap (c: c.memberList) (attrValues model.clusters);
  # The MACs the duplicate check sees, when every MAC string is a valid MAC (members that are not attribute sets
  # have none); otherwise null, and the check takes the per-member way.
  macStrings = filter isString (catAttrs "mac" allMembers);
  lowerMACs = noNulls (map (match lowerMacRe) macStrings);
  validMACs = if lowerMACs || noNulls (map (match u.macRe) macStrings) then macStrings else null;
  raw = model.raw;
  sections = [ "nodes" "clusters" "provisioning" ];
  topLevel = concatMap (k: checkAttrs [ k ] (raw.${k} or null)) sections
    # The flake module hands the core only these three (its own options, nixosModulesFor and the like, stay
    # there), so anything else is a typo or a section from elsewhere, which would otherwise be ignored.
    ++ (if !model.isAttrs then [ ] else concatMap (k: opt (!(elem k sections))
      (problem [ k ] "unknown top-level key; a config has only nodes, clusters and provisioning: move it under one of them, or remove it"))
      (attrNames raw));

  # Where a member's MAC is written: its own override, its named node template, or its inline node.
  macSource = m:
    if (m.overrides.network.mac or null) != null then [ "clusters" m.cluster "members" m.name "network" "mac" ]
    else if m.nodeName != null then [ "nodes" m.nodeName "network" "mac" ]
    else [ "clusters" m.cluster "members" m.name "node" "network" "mac" ];

  # A MAC names one machine (the PXE server and nix8sd's machine records go by it), so a MAC shared by two
  # members is an error wherever it comes from. The usual cause is a node template with network.mac used by
  # several members; the fix is then a MAC per member.
  sharedMAC = m: first:
    let mine = macSource m; theirs = macSource first; other = u.showPath [ "clusters" first.cluster "members" first.name ]; in
    problem [ "clusters" m.cluster "members" m.name "network" "mac" ] (
      if mine == theirs then
        "${show m.mac} is also the MAC of ${other}: both take it from ${u.showPath mine}, but a MAC names one machine (the PXE server boots machines by it); set network.mac on each member to its own machine's MAC and remove it from ${u.showPath mine}"
      else
        "${show m.mac} (set at ${u.showPath mine}) is also the MAC of ${other} (set at ${u.showPath theirs}), but a MAC names one machine (the PXE server boots machines by it); give each member its own network.mac");
in {
  errors = concatLists [
    (opt (!model.isAttrs) (problem [ ] "the config must be an attribute set (a mapping) with nodes, clusters and provisioning, got ${show model.input}"))
    topLevel
    (concatMap (x: x.errors) np)
    (concatMap (x: x.errors) cp)
    (concatMap (x: x.errors) zp)
    # <cluster>-<member> can only collide across clusters (member names are unique within one).
    (duplicates (if length (attrNames model.clusters) < 2 then [ ] else filter (m: u.isLabel m.name) allMembers) (m: m.hostName) (m: first:
      problem [ "clusters" m.cluster "members" m.name ] "host name ${show m.hostName} is also the host name of clusters.${first.cluster}.members.${first.name}; rename one of them"))
    (if validMACs != null && distinct (if lowerMACs then toString else hexLower) validMACs then [ ]
     else duplicates (filter (m: m.isAttrs && u.isMAC m.mac) allMembers) (m: u.toLower m.mac) sharedMAC)
    (provisioningProblems model.provisioning)
    # provisioning.lima: lib/lima.nix.
    lima.errors
  ];
  warnings = concatLists [
    (concatMap (x: x.warnings) np)
    (concatMap (x: x.warnings) cp)
    lima.warnings
    (concatMap (x: x.warnings) zp)
  ];
}
