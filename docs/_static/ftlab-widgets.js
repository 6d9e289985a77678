// Loaded between require.js and the ipywidgets HTML manager (see nb_ipywidgets_js in conf.py).
// The manager computes where its icon fonts live from its RequireJS module URL; map that module
// to the site's own copy so the fonts load from _static/vendor/html-manager on every page depth.
(function () {
  var here = document.currentScript.src.replace(/[^/]*$/, "");
  require.config({ paths: { "@jupyter-widgets/html-manager/dist": here + "vendor/html-manager" } });
})();
