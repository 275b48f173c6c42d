window.MathJax = {
  config: ["TeX-AMS-MML_HTMLorMML-full.js", "Safe.js"],
  tex2jax: {inlineMath: [["$", "$"], ["\\(", "\\)"]], processEscapes: true},
  MMLorHTML: {prefer: "HTML"},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null,
               linebreaks: {automatic: true, width: "container"},
               // its blank font is url('about:blank'), which the page's policy refuses: a local() name loads nothing
               styles: {"@font-face": {"font-family": "MathJax_Blank", src: "local('MathJax_Blank')"}}},
  Safe: {safeProtocols: {http: true, https: true, file: false, javascript: false}},
  showMathMenu: false, showMathMenuMSIE: false, messageStyle: "none", menuSettings: {zoom: "None"}
};
