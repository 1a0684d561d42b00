// Runs in <head>, before the page paints: the chosen theme (light, dark, or the system's).
(function () {
  try {
    var theme = localStorage.getItem("glossator.theme");
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  } catch (e) { /* storage disabled: follow the system */ }
})();
