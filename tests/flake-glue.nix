# Evaluates the flake-parts glue (modules/flake/*.nix) without flake-parts or nixpkgs, neither of which the tests
# here can have: a miniature of lib (just what the modules use), of the module system (definitions merged,
# mkIf/mkMerge honoured, option declarations and their types ignored) and of nixpkgs (nixosSystem returns its
# arguments; packages are stand-in derivations). Enough to check what the glue outputs: which systems, with
# which modules and specialArgs, which apps and packages. Not checked here: option types and defaults (the real
# module system; see docs/flake-glue.md for the evaluation with the real flake-parts).
{ nix8s }:
let
  inherit (builtins) attrNames concatMap foldl' isAttrs isFunction listToAttrs mapAttrs stringLength substring;

  pkg = name: { type = "derivation"; inherit name; outPath = "/nix/store/stand-in-${name}"; meta.mainProgram = name; };
  pkgs = {
    writeText = name: _: pkg name;
    writeTextDir = name: _: pkg name;
    writeShellApplication = { name, text, ... }: pkg name // { inherit text; };
    fetchurl = { url, hash }: pkg "fetched-${baseNameOf url}" // { inherit url hash; };
    callPackage = _: _: pkg "nix8s";
    ipxe = pkg "ipxe";
    postgresql = pkg "postgresql";
    stdenv.hostPlatform.isx86_64 = true;
    pkgsCross.gnu64.ipxe = pkg "ipxe-cross";
  };
  nixpkgs.lib.nixosSystem = args: { inherit args; config.system.build.nix8sNetboot = pkg "netboot"; };
  disko.nixosModules.disko = { _file = "stand-in disko"; };

  mapAttrsToList = f: s: map (n: f n s.${n}) (attrNames s);
  lib = {
    mkOption = o: o;
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    types = let t = name: { inherit name; }; f = name: _: t name; in {
      lazyAttrsOf = f "lazyAttrsOf"; attrsOf = elem: { name = "attrsOf"; inherit elem; }; listOf = f "listOf"; nullOr = f "nullOr";
      # Kept, so that the option declarations inside submodules can be walked (optionDocs below).
      submodule = module: { name = "submodule"; inherit module; }; functionTo = f "functionTo"; either = a: f "either";
      anything = t "anything"; str = t "str"; bool = t "bool"; deferredModule = t "deferredModule";
      path = t "path"; raw = t "raw"; package = t "package";
    };
    isDerivation = v: (v.type or null) == "derivation";
    filterAttrs = pred: s: listToAttrs (concatMap (n: if pred n s.${n} then [ { name = n; value = s.${n}; } ] else [ ]) (attrNames s));
    inherit mapAttrsToList;
    mapAttrs = mapAttrs;
    "mapAttrs'" = f: s: listToAttrs (mapAttrsToList f s);
    nameValuePair = name: value: { inherit name value; };
    listToAttrs = listToAttrs;
    concatMap = concatMap;
    attrNames = attrNames;
    recursiveUpdate = a: b:
      a // mapAttrs (n: v: if isAttrs v && isAttrs (a.${n} or null) && !(v ? _type) then lib.recursiveUpdate a.${n} v else v) b;
    foldr = op: nul: list: foldl' (acc: x: op x acc) nul (builtins.genList (i: builtins.elemAt list (builtins.length list - 1 - i)) (builtins.length list));
    warn = msg: v: builtins.trace "warning: ${msg}" v;
    hasSuffix = suffix: s:
      stringLength s >= stringLength suffix && substring (stringLength s - stringLength suffix) (stringLength suffix) s == suffix;
    getExe = p: "${p}/bin/${p.meta.mainProgram}";
    "getExe'" = p: name: "${p}/bin/${name}";
    getBin = p: p;
    escapeShellArg = x: "'${x}'";
    filter = builtins.filter;
    escapeShellArgs = xs: builtins.concatStringsSep " " (map (x: "'${x}'") xs);
    literalMD = s: s;
  };

  # Definitions resolved and merged as the module system does for these modules: mkIf and mkMerge, attribute
  # sets merged key by key.
  resolve = v:
    if !(isAttrs v) || lib.isDerivation v then v
    else if (v._type or null) == "if" then (if v.condition then resolve v.content else { })
    else if (v._type or null) == "merge" then foldl' merge { } (map resolve v.contents)
    else mapAttrs (_: resolve) v;
  merge = a: b:
    let b' = resolve b; in
    if isAttrs a && isAttrs b' && !(lib.isDerivation b') then
      a // mapAttrs (n: v: if a ? ${n} then merge a.${n} v else resolve v) b'
    else b';

  files = [ ../modules/flake/core.nix ../modules/flake/outputs.nix ../modules/flake/apps.nix
    ../modules/flake/pxe.nix ../modules/flake/lima.nix ../modules/flake/config-yaml.nix ../modules/flake/package.nix ];
  args = { inherit lib config; inputs = { inherit nixpkgs disko; }; self = "/nix/store/stand-in-self"; };
  defs = map (f: ((import f) args).config or { }) files;
  # perSystem is a deferred module in flake-parts: each module's function, all applied to one system.
  perSystems = concatMap (d: if d ? perSystem then [ d.perSystem ] else [ ]) defs;
  merged = foldl' merge { } (map (d: removeAttrs d [ "perSystem" ]) defs);

  # The option defaults the glue relies on, then the user's config, then what the modules define.
  config = {
    nix8s = {
      nixosModulesFor = { };
      inventoryFile = null;
      apps.enable = true;
      defaultInputs = { inherit nixpkgs disko; };
      package = _: pkg "nix8s";
      nodes = { };
      clusters = { };
      provisioning = { };
    } // nix8s // { inherit (merged.nix8s) resolved evaluated; };
    flake = merged.flake;
  };
  perSystem = foldl' merge { } (map (f: f { inherit pkgs; system = "x86_64-linux"; }) perSystems);

  # Every option core.nix declares, by dotted path (`<name>` for an attrsOf element), with its description and
  # example: forcing them checks that each field the module documents from lib/schema.nix is there.
  optionDocs =
    let
      subOptions = t:
        if t.name or null == "submodule" then
          let m = if isFunction t.module then t.module { name = "<name>"; } else t.module; in m.options or { }
        else if t.name or null == "attrsOf" then subOptions t.elem
        else { };
      isOption = o: isAttrs o && o ? description;
      walk = prefix: opts: concatMap (n:
        let o = opts.${n}; path = if prefix == "" then n else "${prefix}.${n}"; in
        if isOption o then
          [ { name = path; value = { inherit (o) description; example = o.example or null; }; } ]
          ++ walk (if (o.type.name or null) == "attrsOf" then "${path}.<name>" else path) (subOptions (o.type or { }))
        else if isAttrs o then walk path o else [ ]) (attrNames opts);
    in
    listToAttrs (walk "" ((import ../modules/flake/core.nix) args).options);
in
{
  inherit optionDocs;
  systems = mapAttrs (host: s: {
    hostName = s.args.specialArgs.nix8s.member.hostName;
    role = s.args.specialArgs.nix8s.member.role;
    # Modules other than disko's and nix8s' own: the user's and the extensions'.
    extraModules = builtins.length s.args.modules - 3;
    hasNixOSData = s.args.specialArgs.nix8s.nixos ? settings;
  }) config.flake.nixosConfigurations;
  apps = mapAttrs (_: a: a.type) perSystem.apps;
  packages = attrNames perSystem.packages;
}
