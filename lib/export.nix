# The config as it may be written out (YAML export, daemon inventory): data only, with secret values removed —
# a token in the export would leak it as surely as one in the Nix store.
let
  u = import ./util.nix;
  inherit (builtins) attrNames filter isAttrs isString listToAttrs mapAttrs match removeAttrs;

  attrsOr = v: if isAttrs v && !(u.isNixOnly v) then v else { };

  # Only references to secrets (`tokenFile`, `agentTokenFile`, any `*File`) survive.
  secretRefs = s: listToAttrs (map (n: { name = n; value = s.${n}; })
    (filter (n: match ".*File" n != null && isString s.${n}) (attrNames (attrsOr s))));

  member = m:
    let
      mm = attrsOr m;
      ref = mm.node or null;
      node =
        if isAttrs ref && isString (ref._nix8sName or null) then ref._nix8sName
        else u.dataOnly ref;
    in u.dataOnly mm // (if mm ? node then { inherit node; } else { });

  cluster = c:
    let cc = attrsOr c; in
    u.dataOnly (removeAttrs cc [ "members" "secrets" ])
    // (if cc ? secrets then { secrets = secretRefs cc.secrets; } else { })
    // (if cc ? members then { members = mapAttrs (_: member) (attrsOr cc.members); } else { });
in
cfg:
let c = attrsOr cfg; in
(if c ? nodes then { nodes = u.dataOnly (attrsOr c.nodes); } else { })
// (if c ? clusters then { clusters = mapAttrs (_: cluster) (attrsOr c.clusters); } else { })
// (if c ? provisioning then { provisioning = u.dataOnly (attrsOr c.provisioning); } else { })
