# Small builtins-only helpers shared by the core (no nixpkgs: the core must evaluate with plain nix-instantiate).
let
  inherit (builtins)
    all attrNames concatStringsSep elemAt filter foldl' fromJSON isAttrs isList
    length listToAttrs mapAttrs match typeOf;
in
rec {
  # Attribute access through a list of names that tolerates missing and non-attrset parents.
  attrByPath = path: default: v:
    let
      go = i: x:
        if i == length path then x
        else let n = elemAt path i; in
          if isAttrs x && x ? ${n} then go (i + 1) x.${n} else default;
    in go 0 v;

  hasPath = path: v: attrByPath path null v != null;

  # Like nixpkgs' recursiveUpdate: attrsets merge recursively, anything else (lists too) is replaced.
  recursiveUpdate = lhs: rhs:
    if isAttrs lhs && isAttrs rhs && !(isNixOnly lhs) && !(isNixOnly rhs) then
      lhs // mapAttrs (n: r: if lhs ? ${n} then recursiveUpdate lhs.${n} r else r) rhs
    else rhs;

  # Values that have no YAML/JSON form: they may ride along in the config but never enter the plan.
  isNixOnly = v:
    let t = typeOf v; in
    if t == "set" then v ? _type || v ? __functor || (v.type or null) == "derivation"
    else t == "lambda" || t == "path";

  # The JSON-serializable part of a value: Nix-only values and `nixosModules` are dropped, and so is the
  # internal `_nix8sName` tag the flake module puts on node templates.
  dataOnly = v:
    let t = typeOf v; in
    if t == "set" then (if isNixOnly v then null else dataAttrs v)
    else if t == "list" then map dataOnly (filter (x: !(isNixOnly x)) v)
    else if t == "lambda" || t == "path" then null
    else v;

  # An attribute set of strings only (a member's `network = { mac = ...; }`) is its own data-only form: no call per key.
  dataAttrs = v: if !(v ? nixosModules || v ? _nix8sName) && all builtins.isString (builtins.attrValues v) then v else listToAttrs (builtins.concatMap (n:
    let x = v.${n}; tx = typeOf x; in
    if n == "nixosModules" || n == "_nix8sName" || tx == "lambda" || tx == "path" then [ ]
    else if tx == "set" then (if isNixOnly x then [ ] else [ { name = n; value = dataAttrs x; } ])
    else if tx == "list" then [ { name = n; value = dataOnly x; } ]
    else [ { name = n; value = x; } ]) (attrNames v));

  # recursiveUpdate for values already made data-only. Without a key in common (a member overriding only
  # network.mac of a template without one) it is a plain `//`, with no call per key.
  dataUpdate = lhs: rhs:
    if isAttrs lhs && isAttrs rhs then
      lhs // (if builtins.intersectAttrs lhs rhs == { } then rhs else mapAttrs (n: r: if lhs ? ${n} then dataUpdate lhs.${n} r else r) rhs)
    else rhs;

  # ---- formatting ------------------------------------------------------------------------------------------------

  # `clusters.prod.members.agent1.node`; names that are not Nix identifiers are quoted.
  showPath = segs: concatStringsSep "." (map (s: if match "[a-zA-Z_][a-zA-Z0-9_'-]*" s != null then s else builtins.toJSON s) segs);

  quoteList = xs: if xs == [ ] then "(none)" else concatStringsSep ", " (map builtins.toJSON xs);

  show = v:
    let t = typeOf v; in
    if t == "string" then builtins.toJSON v
    else if t == "int" || t == "bool" || t == "null" || t == "float" then builtins.toJSON v
    else "a " + (if t == "set" then "attribute set" else if t == "lambda" then "function" else t);

  problem = segs: message: { path = showPath segs; inherit message; };

  # ---- addresses ---------------------------------------------------------------------------------------------------

  octet = "(0|[1-9][0-9]{0,2})";
  octet255 = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
  ipv4Re = "${octet255}\\.${octet255}\\.${octet255}\\.${octet255}";

  # "10.0.0.1" -> [ 10 0 0 1 ], or null when malformed (leading zeros are refused: they read as octal elsewhere).
  parseIPv4 = s:
    if typeOf s != "string" then null
    else
      let m = match "${octet}\\.${octet}\\.${octet}\\.${octet}" s; in
      if m == null then null
      else let os = map fromJSON m; in if all (o: o <= 255) os then os else null;

  # One regex, no arithmetic: this runs for every member.
  isIPv4 = s: typeOf s == "string" && match ipv4Re s != null;

  ipToInt = os: ((elemAt os 0 * 256 + elemAt os 1) * 256 + elemAt os 2) * 256 + elemAt os 3;

  intToIp = n:
    let o = k: toString (mod (n / pow2 (8 * k)) 256); in
    "${o 3}.${o 2}.${o 1}.${o 0}";

  mod = a: b: a - (a / b) * b;

  pow2 = k: foldl' (acc: _: acc * 2) 1 (builtins.genList (x: x) k);

  # "10.42.0.0/16" -> { ip = "10.42.0.0"; prefix = 16; network = <int>; size = <int>; hostBitsSet; }, or null.
  parseCIDR = s:
    if typeOf s != "string" then null
    else
      let m = match "([^/]+)/(0|[1-9][0-9]?)" s; in
      if m == null then null
      else
        let
          os = parseIPv4 (elemAt m 0);
          prefix = fromJSON (elemAt m 1);
        in
        if os == null || prefix > 32 then null
        else
          let
            n = ipToInt os;
            size = pow2 (32 - prefix);
            network = n - mod n size;
          in { ip = elemAt m 0; inherit prefix size network; hostBitsSet = network != n; };

  cidrContains = c: ipStr:
    let os = parseIPv4 ipStr; in
    os != null && (let n = ipToInt os; in n >= c.network && n < c.network + c.size);

  # Written out without groups: a group makes every match allocate its capture, and this runs for every member.
  macRe = let h = "[0-9a-fA-F]{2}"; in "${h}:${h}:${h}:${h}:${h}:${h}";
  isMAC = s: typeOf s == "string" && match macRe s != null;

  # MACs compare and print in lower case.
  toLower = builtins.replaceStrings [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
    [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];

  # RFC 1123 label, lowercase as Kubernetes node names require.
  labelRe = "[a-z0-9]|[a-z0-9][-a-z0-9]{0,61}[a-z0-9]"; # no group: see macRe
  isLabel = s: typeOf s == "string" && match labelRe s != null;

  # ---- misc ------------------------------------------------------------------------------------------------------------

  hexDigit = c: fromJSON (builtins.replaceStrings [ "a" "b" "c" "d" "e" "f" ] [ "10" "11" "12" "13" "14" "15" ] c);

  # A stable number in [lo, hi] derived from a string (VRRP router ids and the like).
  hashRange = lo: hi: s:
    let h = builtins.hashString "sha256" s;
        n = hexDigit (builtins.substring 0 1 h) * 4096 + hexDigit (builtins.substring 1 1 h) * 256
          + hexDigit (builtins.substring 2 1 h) * 16 + hexDigit (builtins.substring 3 1 h);
    in lo + mod n (hi - lo + 1);
}
