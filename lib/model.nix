# Normalises the raw config once (node references resolved, overrides merged, roles and order computed), so that
# validation, planning and NixOS rendering share one linear pass over the members.
let
  u = import ./util.nix;
  inherit (builtins)
    attrNames filter head isAttrs isList isString length listToAttrs mapAttrs removeAttrs sort tail typeOf;

  # Member keys that describe the membership itself; everything else on a member overrides the node template.
  memberKeys = [ "node" "role" "ip" "name" ];
in
# dataInput: the config was parsed from JSON (as the Go tools pass it), so it holds no Nix-only values and the
# members' overrides need no data-only copy; the result is the same.
{ dataInput ? false }:
cfg:
let
  # What JSON cannot hold, it does not hold: in dataInput mode no value is Nix-only.
  nixOnly = v: !dataInput && u.isNixOnly v;
  attrsOr = v: if isAttrs v && !(nixOnly v) then v else { };
  raw = if isAttrs cfg then cfg else { };
  nodes = attrsOr (raw.nodes or { });
  clusters = attrsOr (raw.clusters or { });
  provisioning = attrsOr (raw.provisioning or { });
  nodesData = mapAttrs (_: n: if isAttrs n then u.dataOnly n else { }) nodes;

  member = cname: mname: m:
    let
      mm = attrsOr m;
      ref = mm.node or null;
      refKind =
        if ref == null then "missing"
        else if isString ref then (if nodes ? ${ref} then "name" else "unknown")
        else if isAttrs ref && !(u.isNixOnly ref) then "value"
        else "invalid";
      nodeName =
        if refKind == "name" then ref
        else if refKind == "value" && isString (ref._nix8sName or null) then ref._nix8sName
        else null;
      template =
        if refKind == "name" then attrsOr nodes.${ref}
        else if refKind == "value" then ref
        else { };
      overrides = removeAttrs mm memberKeys;
      # Templates are made data-only once per node, not once per member; members without overrides share them.
      templateData =
        if nodeName != null && nodesData ? ${nodeName} then nodesData.${nodeName}
        else u.dataOnly template;
      config = if overrides == { } then templateData else u.dataUpdate templateData (if dataInput then overrides else u.dataOnly overrides);
      mac = (config.network.mac or null);
    in {
      name = mname;
      cluster = cname;
      hostName = "${cname}-${mname}";
      isAttrs = isAttrs m && !(nixOnly m);
      raw = mm;
      inherit ref refKind nodeName template overrides config mac;
      role = mm.role or null;
      ip = mm.ip or null;
      # Computed once per member, read by validation's own checks and its duplicate checks.
      ipValid = u.isIPv4 (mm.ip or null);
      macValid = u.isMAC mac;
    };

  cluster = cname: c:
    let
      cc = attrsOr c;
      members = mapAttrs (member cname) (attrsOr (cc.members or { }));
      names = attrNames members; # sorted
      servers = filter (n: members.${n}.role == "server") names;
      agents = filter (n: members.${n}.role == "agent") names;
      ha = attrsOr (cc.ha or { });
      haEnable = ha.enable or false == true;
      vip = if haEnable && isString (ha.vip or null) then ha.vip else null;
      requestedFirst = ha.firstServer or null;
      firstServer =
        if isString requestedFirst && builtins.elem requestedFirst servers then requestedFirst
        else if servers != [ ] then head servers
        else null;
      otherServers = filter (n: n != firstServer) servers;
      lb = ha.loadBalancer or "keepalived";
      net = attrsOr (cc.network or { });
    in {
      name = cname;
      raw = cc;
      inherit members names servers agents otherServers firstServer ha haEnable vip;
      # keepalived moves the VIP between servers and haproxy on the VIP spreads API traffic over all of them;
      # "external" means the VIP is served by a load balancer outside the cluster.
      loadBalancer = if vip != null && lb == "keepalived" then "keepalived" else if vip != null then lb else null;
      k3s = attrsOr (cc.k3s or { });
      network = {
        prefixLength = net.prefixLength or 24;
        gateway = net.gateway or null;
        nameservers = net.nameservers or [ ];
      };
      secrets = attrsOr (cc.secrets or { });
      endpointHost = if vip != null then vip else if firstServer != null then members.${firstServer}.ip else null;
    };
in {
  inherit raw nodes provisioning;
  isAttrs = isAttrs cfg && !(nixOnly cfg);
  input = cfg;
  clusters = mapAttrs cluster clusters;
  nodeNames = attrNames nodes;
}
