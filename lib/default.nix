# The pure core of nix8s: plain Nix with builtins only, so `nix-instantiate` (and the Go tools through it) can
# validate and plan without nixpkgs or any flake input. See docs/core.md for the contract.
let
  model = import ./model.nix { };
  jsonModel = import ./model.nix { dataInput = true; };
  validateModel = import ./validate.nix;
  planModel = import ./plan.nix;
  nixosModel = import ./nixos.nix;
  pxeModel = import ./pxe.nix;
  u = import ./util.nix;

  # One message listing every error, for the places that must fail evaluation (plan, the flake module).
  errorMessage = errors:
    "nix8s: the config has ${toString (builtins.length errors)} error${if builtins.length errors == 1 then "" else "s"}:\n"
    + builtins.concatStringsSep "\n" (map (e: "  - ${e.path}: ${e.message}") errors);

  checked = cfg: f:
    let m = model cfg; r = validateModel m; in
    if r.errors != [ ] then throw (errorMessage r.errors) else f m;
in {
  validate = cfg: validateModel (model cfg);

  plan = cfg: checked cfg planModel;

  # validate and plan in one pass over the config: `{ report; plan; }`, without `plan` when there are errors.
  check = cfg:
    let m = model cfg; r = validateModel m; in
    { report = r; } // (if r.errors == [ ] then { plan = planModel m; } else { });

  # check of a config parsed from JSON (what nix8s and nix8sd pass): the same result with less work, as JSON holds
  # no Nix-only values to leave out.
  checkJSON = cfg:
    let m = jsonModel cfg; r = validateModel m; in
    { report = r; } // (if r.errors == [ ] then { plan = planModel m; } else { });

  # checkJSON of the inventory nix8sd stores, with the daemon's stricter rules: a secret value (secrets.token,
  # secrets.agentToken), only a warning in a flake's config, is an error, since any read token reads the inventory
  # and it is rendered into a flake workspace. The plan is the same as checkJSON's.
  checkStored = cfg:
    let m = jsonModel cfg // { stored = true; }; r = validateModel m; in
    { report = r; } // (if r.errors == [ ] then { plan = planModel m; } else { });

  nixos = cfg: checked cfg (m: nixosModel m (planModel m));

  # Everything the flake module needs from one config, from one evaluation of the model and of validate:
  # `report` always; `plan`, `nixos` (the NixOS data by host) and `exportable` fail with every error when the
  # report has any. Each is computed only when read.
  evaluate = cfg:
    let
      m = model cfg;
      r = validateModel m;
      p = planModel m;
      ok = x: if r.errors != [ ] then throw (errorMessage r.errors) else x;
    in {
      report = r;
      plan = ok p;
      nixos = ok (nixosModel m p);
      exportable = ok (import ./export.nix cfg);
    };

  # The PXE server's view (`{ errors; warnings; server; machines; }`) of the clusters it serves (a list of names,
  # or null for all): validate's problems and its own in one pass, the machines only when there are no errors.
  pxe = cfg: clusters:
    let m = model cfg; in
    pxeModel { model = m; report = validateModel m; inherit planModel; } clusters;

  # The Lima view of one cluster (`{ errors; warnings; cluster; network; waves; members; }`, lib/lima.nix): what
  # `nix8s lima up|down|status` acts on; network and members only when there are no errors.
  lima = cfg: cluster:
    let m = model cfg; r = validateModel m; in
    (import ./lima.nix m).view r (if r.errors == [ ] then planModel m else { }) cluster;

  exportable = import ./export.nix;

  schema = import ./schema.nix;

  nixosOptionPaths = import ./nixos-options.nix;

  inherit errorMessage;

  # Internal building blocks, for the flake module and tests.
  internal = { inherit model u; validateModel = validateModel; planModel = planModel; };
}
