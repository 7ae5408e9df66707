# Normalises the raw config once (node references resolved, overrides merged, roles and order computed), so that
# validation, planning and NixOS rendering share one linear pass over the members.
let
  u = import ./util.nix;
  inherit (builtins)
    attrNames catAttrs filter head isAttrs isList isString length listToAttrs mapAttrs removeAttrs sort tail typeOf;

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
  # What a member naming a node template gets, looked up once per template rather than once per member.
  namedNodes = mapAttrs (name: n: { template = attrsOr n; data = nodesData.${name}; }) nodes;

  # Built for every member: each binding and field below is a thunk allocated per member, so there are no more of
  # them than validate, plan, nixos and pxe read.
  member = cname: mname: m:
    let
      ok = isAttrs m && (dataInput || !(u.isNixOnly m));
      mm = if ok then m else { };
      ref = mm.node or null;
      named = if isString ref then namedNodes.${ref} or null else null;
      refKind =
        if named != null then "name"
        else if ref == null then "missing"
        else if isString ref then "unknown"
        else if isAttrs ref && !(u.isNixOnly ref) then "value"
        else "invalid";
      nodeName =
        if named != null then ref
        else if refKind == "value" && isString (ref._nix8sName or null) then ref._nix8sName
        else null;
      template =
        if named != null then named.template
        else if refKind == "value" then ref
        else { };
      overrides = removeAttrs mm memberKeys;
      # Templates are made data-only once per node, not once per member; members without overrides share them.
      config =
        let
          templateData =
            if named != null then named.data
            else if nodeName != null && nodesData ? ${nodeName} then nodesData.${nodeName}
            else u.dataOnly template;
        in
        if overrides == { } then templateData
        else u.dataUpdate templateData (if dataInput then overrides else u.dataOnly overrides);
    in {
      name = mname;
      cluster = cname;
      hostName = "${cname}-${mname}";
      isAttrs = ok;
      raw = mm;
      inherit ref refKind nodeName template overrides config;
      mac = config.network.mac or null;
      role = mm.role or null;
      ip = mm.ip or null;
    };

  cluster = cname: c:
    let
      cc = attrsOr c;
      members = mapAttrs (member cname) (attrsOr (cc.members or { }));
      names = attrNames members; # sorted
      memberList = builtins.attrValues members; # in the order of names
      # One pass over the members (groupBy keeps their order).
      byRole = builtins.groupBy (m: if isString m.role then m.role else "") memberList;
      servers = catAttrs "name" (byRole.server or [ ]);
      agents = catAttrs "name" (byRole.agent or [ ]);
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
      inherit members memberList names servers agents otherServers firstServer ha haEnable vip;
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
  inherit raw nodes nodesData provisioning dataInput;
  isAttrs = isAttrs cfg && !(nixOnly cfg);
  input = cfg;
  clusters = mapAttrs cluster clusters;
  nodeNames = attrNames nodes;
}
